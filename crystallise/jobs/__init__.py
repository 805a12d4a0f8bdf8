"""Machinery shared by every background job (screening, indexing).

`models.BaseJob` holds the state every job has (status, progress, usage,
cost, lease and heartbeat); `runner.run_job` runs a job's items through the
LLM with bounded concurrency, batched writes, cancellation and restart
safety; `services` creates, enqueues, cancels and recovers jobs.
"""

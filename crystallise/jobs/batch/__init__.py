"""The batch lane: a job's items go to the provider's Batch API as JSONL files, and their answers
come back in output and error files, collected by scheduled ticks (`crystallise.jobs.batch.poll`).
See docs/backend-guide.md#batch-lane.
"""

from crystallise.jobs.batch.poll import BatchStrategy

__all__ = ["BatchStrategy"]

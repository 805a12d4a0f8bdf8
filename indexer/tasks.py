"""django-q2 entry points: thin, primary keys in, services do the work."""

from __future__ import annotations


def run_index_job(job_id: str) -> str | None:
    from crystallise.metrics.record import job_run_observed
    from indexer.models import IndexJob
    from indexer.services import job_run

    with job_run_observed(IndexJob, job_id, kind="indexing"):
        return job_run(job_id=job_id)

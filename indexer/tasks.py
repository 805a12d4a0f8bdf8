"""django-q2 entry points: thin, primary keys in, services do the work."""

from __future__ import annotations


def run_index_job(job_id: str) -> str | None:
    from indexer.services import job_run

    return job_run(job_id=job_id)

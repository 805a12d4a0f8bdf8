"""django-q2 entry points: thin, primary keys in, services do the work."""

from __future__ import annotations


def run_screening_job(job_id: str) -> str | None:
    from crystallise.metrics.record import job_run_observed
    from screening.models import ScreeningJob
    from screening.services import job_run

    with job_run_observed(ScreeningJob, job_id, kind="screening"):
        return job_run(job_id=job_id)



def deliver_screening_callback(job_id: str) -> str | None:
    from screening.services import callback_deliver

    return callback_deliver(job_id=job_id)

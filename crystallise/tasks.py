"""Scheduled maintenance (django-q2 schedule created by a data migration)."""

from __future__ import annotations


def recover_jobs() -> dict:
    """Resume or fail orphaned jobs of every kind (each job model names its task in `RUN_TASK`)."""
    from crystallise.jobs.models import BaseJob
    from crystallise.jobs.services import jobs_recover

    return {model.__name__: jobs_recover(model=model, task=model.RUN_TASK) for model in BaseJob.__subclasses__()}

"""Scheduled maintenance (django-q2 schedule created by a data migration)."""

from __future__ import annotations


def recover_jobs() -> dict:
    """Resume or fail orphaned jobs of every kind (each job model names its task in `RUN_TASK`)."""
    from crystallise.jobs.lifecycle import recover
    from crystallise.jobs.models import BaseJob

    return {model.__name__: recover(model=model) for model in BaseJob.__subclasses__()}


def poll_batches() -> dict:
    """Advance every batch-mode job waiting on the provider: poll its batches, collect, resubmit, conclude."""
    from crystallise.jobs.batch.poll import poll_all
    from crystallise.metrics.record import batch_poll_observed

    with batch_poll_observed():
        return poll_all()

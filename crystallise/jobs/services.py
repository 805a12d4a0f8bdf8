"""Job workflows shared by screening and indexing: enqueue, cancel, recover."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from crystallise.errors import Category
from crystallise.jobs.models import BaseJob, JobSecret, JobStatus
from crystallise.jobs.runner import fail_unclaimed
from crystallise.keyvault import encrypt

logger = logging.getLogger(__name__)

# A pending job not picked up for this long is enqueued again (duplicates are harmless: claims are exclusive).
REENQUEUE_AFTER = timedelta(minutes=10)


def store_request_key(job: BaseJob, key: str) -> None:
    JobSecret.objects.create(job_id=job.pk, ciphertext=encrypt(key))


def job_enqueue(*, job: BaseJob, task: str) -> None:
    """Enqueue the job's task once the creating transaction commits.

    If enqueueing fails the job fails at once (`internal`) instead of
    sitting in `pending` forever.
    """

    def kickoff() -> None:
        try:
            job_enqueue_now(job=job, task=task)
        except Exception:
            logger.exception("Could not enqueue job %s", job.pk)
            fail_unclaimed(type(job), job.pk, Category.INTERNAL, "The job could not be queued for a worker. Resubmit it.")

    transaction.on_commit(kickoff)


def job_cancel(*, job: BaseJob) -> BaseJob:
    """Cancel an active job; its worker sees the lost lease at its next write and stops calling the LLM.

    The row is locked first, so a batch the worker is writing at that moment
    commits before the cancel, and `finished_at` is taken after it: no result
    of a cancelled job is newer than its `finished_at`.
    """
    model = type(job)
    with transaction.atomic():
        if model.objects.select_for_update().filter(pk=job.pk, status__in=(JobStatus.PENDING, JobStatus.RUNNING)).exists():
            now = timezone.now()
            model.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=now, updated_at=now, lease=None)
        JobSecret.objects.filter(job_id=job.pk).delete()
    job.refresh_from_db()
    return job


def jobs_recover(*, model: type[BaseJob], task: str) -> dict[str, int]:
    """Re-enqueue orphaned jobs (dead worker, lost kickoff); runs on a schedule and via `recover_jobs`.

    A stale running job is re-enqueued: the next run resumes it from its
    persisted results with its original key, or fails it `server_restart`
    when that key is gone.
    """
    counts = {"resumed": 0, "requeued": 0}
    now = timezone.now()
    for job in model.objects.stale().only("pk"):
        job_enqueue_now(job=job, task=task)
        counts["resumed"] += 1
    # A pending job's heartbeat is its last enqueue time; a job never enqueued (the web process died
    # between saving and enqueueing it, or a CLI run stopped before starting it) has none.
    cutoff = now - REENQUEUE_AFTER
    waiting = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    for job in model.objects.filter(waiting, status=JobStatus.PENDING).only("pk"):
        job_enqueue_now(job=job, task=task)
        counts["requeued"] += 1
    return counts


def job_enqueue_now(*, job: BaseJob, task: str) -> None:
    from django_q.tasks import async_task

    type(job).objects.filter(pk=job.pk, status=JobStatus.PENDING).update(heartbeat_at=timezone.now())
    async_task(task, str(job.pk), task_name=f"{task}:{job.pk}", group=job._meta.app_label)

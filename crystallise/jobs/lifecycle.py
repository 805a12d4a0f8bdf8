"""Every state change of a job, in one place: enqueue, claim, heartbeat,
finish, fail, fail-unclaimed, cancel, reopen and recovery.

    pending ──claim──▶ running ──finish──▶ completed | failed
       │                  │  ▲
       │                  │  └─ claim again once its heartbeat is stale (a dead worker): resume
       └──────cancel──────┴──────────────▶ cancelled
    failed/cancelled ──reopen──▶ pending        (the command line's rerun)

Whatever way a job ends (completed, failed, cancelled, never enqueued), the
same `_ended` runs once, by whoever made the transition: it deletes the job's
encrypted OpenAI key and calls the end hook its app registered (screening
queues the completion callback there).

Every transition is a conditional UPDATE whose row count says whether this
caller made it, so two processes can never both finish, or both claim, one job.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from crystallise.errors import Category
from crystallise.jobs.models import ACTIVE_STATUSES, BaseJob, JobSecret, JobStatus
from crystallise.keyvault import encrypt

logger = logging.getLogger(__name__)

# A pending job not picked up for this long is enqueued again (duplicates are harmless: claims are exclusive).
REENQUEUE_AFTER = timedelta(minutes=10)

EndHook = Callable[[Any], None]
_END_HOOKS: dict[type[BaseJob], EndHook] = {}


def register_end_hook(model: type[BaseJob], hook: EndHook) -> None:
    """Call `hook(job_id)` whenever a job of `model` ends (apps register theirs in `AppConfig.ready`)."""
    _END_HOOKS[model] = hook


def _ended(model: type[BaseJob], job_id) -> None:
    """The one terminal hook: forget the job's key, then the app's own ending (e.g. its callback)."""
    JobSecret.objects.filter(job_id=job_id).delete()
    hook = _END_HOOKS.get(model)
    if hook is not None:
        try:
            hook(job_id)
        except Exception:
            # The job has ended whatever its hook does; a failing hook must not turn an ending into a crash.
            logger.exception("The end hook of job %s failed", job_id)


# --- creation and queueing ------------------------------------------------
def store_request_key(job: BaseJob, key: str) -> None:
    JobSecret.objects.create(job_id=job.pk, ciphertext=encrypt(key))


def enqueue(job: BaseJob) -> None:
    """Enqueue the job's run once the creating transaction commits.

    If enqueueing fails the job fails at once (`internal`), with its ending
    (key deleted, callback queued), instead of sitting in `pending` forever.
    """

    def kickoff() -> None:
        try:
            enqueue_now(job)
        except Exception:
            logger.exception("Could not enqueue job %s", job.pk)
            fail_unclaimed(type(job), job.pk, Category.INTERNAL, "The job could not be queued for a worker. Resubmit it.")

    transaction.on_commit(kickoff)


def enqueue_now(job: BaseJob) -> None:
    from django_q.tasks import async_task

    model = type(job)
    model.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(heartbeat_at=timezone.now())
    async_task(model.RUN_TASK, str(job.pk), task_name=f"{model.RUN_TASK}:{job.pk}", group=job._meta.app_label)


# --- a run's ownership -----------------------------------------------------
def claim(model: type[BaseJob], job_id, token: uuid.UUID) -> bool:
    """Take the job: pending, or running with a dead worker. True if this run owns it."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CRYSTALLISE_JOB_STALE_SECONDS)
    owned = model.objects.filter(
        Q(status=JobStatus.PENDING) | Q(status=JobStatus.RUNNING, heartbeat_at__lt=stale), pk=job_id
    ).update(status=JobStatus.RUNNING, lease=token, heartbeat_at=now, attempts=F("attempts") + 1, updated_at=now)
    if owned:
        model.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return bool(owned)


def owned(model: type[BaseJob], job_id, token: uuid.UUID):
    """The job's row while `token`'s run owns it (an UPDATE through it also checks the lease)."""
    return model.objects.filter(pk=job_id, lease=token, status=JobStatus.RUNNING)


def heartbeat(model: type[BaseJob], job_id, token: uuid.UUID, **updates) -> bool:
    """Refresh the heartbeat (and apply `updates`) while the run still owns the job. False once it does not."""
    now = timezone.now()
    return bool(owned(model, job_id, token).update(heartbeat_at=now, updated_at=now, **updates))


def finish(model: type[BaseJob], job_id, token, status: str, *, category=None, message=None) -> bool:
    """End a run's job (completed or failed). False if the run no longer owned it."""
    now = timezone.now()
    done = owned(model, job_id, token).update(
        status=status, error_category=category, error_message=message, finished_at=now, updated_at=now, lease=None
    )
    if done:
        _ended(model, job_id)
    return bool(done)


def fail_unclaimed(model: type[BaseJob], job_id, category: str, message: str) -> bool:
    """Fail an active job that no run owns (kickoff failed, key gone)."""
    now = timezone.now()
    done = model.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).update(
        status=JobStatus.FAILED, error_category=category, error_message=message, finished_at=now, updated_at=now, lease=None
    )
    if done:
        _ended(model, job_id)
    else:
        JobSecret.objects.filter(job_id=job_id).delete()
    return bool(done)


# --- from outside a run ----------------------------------------------------
def cancel(*, job: BaseJob) -> BaseJob:
    """Cancel an active job (the API's DELETE, the admin action, the commands' Ctrl-C).

    The row is locked first, so a batch the worker is writing at that moment
    commits before the cancel, and `finished_at` is taken after it: no result
    of a cancelled job is newer than its `finished_at`. The worker sees the
    lost lease at its next write and stops calling the LLM.
    """
    model = type(job)
    with transaction.atomic():
        cancelled = model.objects.select_for_update().filter(pk=job.pk, status__in=ACTIVE_STATUSES).exists()
        if cancelled:
            now = timezone.now()
            model.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=now, updated_at=now, lease=None)
        else:
            JobSecret.objects.filter(job_id=job.pk).delete()
    if cancelled:
        try:
            if job.mode == "batch":
                # Before `_ended` forgets a per-request key: the provider's batches are cancelled with it.
                from crystallise.jobs.batch.poll import on_cancel

                try:
                    on_cancel(model, job.pk)
                except Exception:
                    logger.exception("Cancelling the batches of job %s failed", job.pk)
        finally:
            # Even when the request is cut short (a worker timeout raises SystemExit): the key is forgotten,
            # the callback queued.
            _ended(model, job.pk)
    job.refresh_from_db()
    return job


def reopen(*, job: BaseJob, complete: bool) -> BaseJob:
    """Make an interrupted or ended job runnable again (the command line's rerun), in the caller's transaction.

    A job left `running` by a killed process gets its heartbeat moved into
    the past so the next run can claim it at once; an ended job that is not
    `complete` goes back to `pending`.
    """
    model = type(job)
    if job.status == JobStatus.RUNNING:
        stale = timezone.now() - timedelta(seconds=settings.CRYSTALLISE_JOB_STALE_SECONDS + 1)
        model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(heartbeat_at=stale)
    elif job.status != JobStatus.PENDING and not complete:
        model.objects.filter(pk=job.pk).update(status=JobStatus.PENDING, error_category=None, error_message=None,
                                               finished_at=None, lease=None)
    job.refresh_from_db()
    return job


def recover(*, model: type[BaseJob]) -> dict[str, int]:
    """Re-enqueue orphaned jobs (dead worker, lost kickoff); runs on a schedule and via `recover_jobs`.

    A stale running job is re-enqueued: the next run resumes it from its
    persisted results with its original key, or fails it `server_restart`
    when that key is gone.
    """
    counts = {"resumed": 0, "requeued": 0}
    for job in model.objects.stale().only("pk"):
        enqueue_now(job)
        counts["resumed"] += 1
    # A pending job's heartbeat is its last enqueue time; a job never enqueued (the web process died
    # between saving and enqueueing it, or a CLI run stopped before starting it) has none.
    cutoff = timezone.now() - REENQUEUE_AFTER
    waiting = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    for job in model.objects.filter(waiting, status=JobStatus.PENDING).only("pk"):
        enqueue_now(job)
        counts["requeued"] += 1
    return counts

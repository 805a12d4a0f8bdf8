"""When batch ticks run: the first one inside the job's run (it submits), then one per poll of the
`crystallise.poll_batches` schedule (every minute), and one when the job is cancelled.

Between ticks a running batch job is parked: its heartbeat is set in the future, to the time the
next tick is due plus the stale window. Recovery (which re-runs jobs whose heartbeat is older
than the stale window) therefore leaves it alone while the schedule runs; if the schedule stops
for longer than that (workers down), recovery resumes it through the runner, whose tick polls
the batches already recorded: nothing is submitted twice. A tick claims the job with one
conditional UPDATE, so two pollers never tick one job at once:

    heartbeat_at > now + stale      parked, not yet due
    now < heartbeat_at <= now+stale due: the poller claims it
    now-stale <= heartbeat_at <= now a run or tick owns it (its keep-alive beats)
    heartbeat_at < now - stale      orphaned: the poller (or recovery) claims it
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from crystallise.errors import Category
from crystallise.jobs import lifecycle
from crystallise.jobs.batch.book import Book
from crystallise.jobs.batch.tick import BatchTick
from crystallise.jobs.models import BaseJob, JobMode, JobStatus
from crystallise.jobs.runner import keep_alive
from crystallise.keyvault import job_openai_key

logger = logging.getLogger(__name__)

# Cancelled jobs are polled for what their batches return for this long (the provider's
# cancelling takes up to about ten minutes; a day is generous).
CANCELLED_WINDOW = timedelta(days=2)


class BatchStrategy:
    """The batch lane: each run is one tick; the job waits for the provider parked, not in a worker."""

    name = "batch"

    def run(self, kind, job: BaseJob, token: uuid.UUID, api_key: str | None, concurrency: int | None) -> str | None:
        model = kind.job_model
        with keep_alive(model, job.pk, token):
            status = BatchTick(kind, job, token, api_key).run()
        if status is None:
            park(model, job.pk, token)
        return status


def park(model: type[BaseJob], job_id, token: uuid.UUID) -> None:
    stale = settings.CRYSTALLISE_JOB_STALE_SECONDS
    due = timezone.now() + timedelta(seconds=settings.CRYSTALLISE_BATCH_POLL_SECONDS + stale)
    lifecycle.owned(model, job_id, token).update(heartbeat_at=due)


def kind_for(model: type[BaseJob]):
    return import_string(model.KIND)()


def due(model: type[BaseJob], *, early: bool = False):
    """Running batch jobs whose next tick is due (`early`: every parked one) or whose worker died."""
    now = timezone.now()
    stale = timedelta(seconds=settings.CRYSTALLISE_JOB_STALE_SECONDS)
    parked = Q(heartbeat_at__gt=now) if early else Q(heartbeat_at__gt=now, heartbeat_at__lte=now + stale)
    return model.objects.filter(mode=JobMode.BATCH, status=JobStatus.RUNNING).filter(
        parked | Q(heartbeat_at__lt=now - stale))


def tick_running(model: type[BaseJob], job_id, *, early: bool = False) -> str | None:
    """Claim a due batch job and tick it. Returns its final status, or None."""
    token = uuid.uuid4()
    now = timezone.now()
    if not due(model, early=early).filter(pk=job_id).update(lease=token, heartbeat_at=now, updated_at=now):
        return None
    job = model.objects.get(pk=job_id)
    available, api_key = job_openai_key(job)
    if not available:
        lifecycle.finish(model, job_id, token, JobStatus.FAILED, category=Category.SERVER_RESTART,
                         message="The job's OpenAI key is no longer available (a per-request key is kept only "
                         "while the job runs). Its batches were left at the provider; resubmit the job.")
        return JobStatus.FAILED
    kind = kind_for(model)
    try:
        with keep_alive(model, job_id, token):
            kind.prepare(job)
        return BatchStrategy().run(kind, job, token, api_key, None)
    except Exception:
        logger.exception("Batch job %s crashed", job_id)
        lifecycle.finish(model, job_id, token, JobStatus.FAILED, category=Category.INTERNAL,
                         message="The job failed with an internal error; the failure has been logged.")
        return JobStatus.FAILED


def tick_cancelled(model: type[BaseJob], job_id) -> None:
    """Cancel a cancelled job's batches at the provider (once) and keep what they return."""
    token = uuid.uuid4()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CRYSTALLISE_JOB_STALE_SECONDS)
    claimed = model.objects.filter(Q(lease__isnull=True) | Q(heartbeat_at__lt=stale), pk=job_id,
                                   status=JobStatus.CANCELLED).update(lease=token, heartbeat_at=now)
    if not claimed:
        return
    try:
        job = model.objects.get(pk=job_id)
        if not Book(job.batches).open():
            return
        available, api_key = job_openai_key(job)
        if not available:
            # A per-request key is forgotten when the job ends: what its batches return cannot be fetched.
            book = Book(job.batches)
            for entry in book.open():
                entry.update(collected=True, error=entry.get("error") or "Not collected: the job's key is gone.")
            model.objects.filter(pk=job_id, lease=token).update(batches=book.entries)
            return
        kind = kind_for(model)
        kind.prepare(job)
        BatchTick(kind, job, token, api_key).run()
    except Exception:
        logger.exception("Collecting the batches of cancelled job %s failed", job_id)
    finally:
        model.objects.filter(pk=job_id, lease=token).update(lease=None)


def on_cancel(model: type[BaseJob], job_id) -> None:
    """Called by `lifecycle.cancel` while the job's key still exists: cancel its batches now."""
    if model.objects.filter(pk=job_id, mode=JobMode.BATCH).exists():
        tick_cancelled(model, job_id)


def follow(model: type[BaseJob], job_id, *, poll_seconds: float,
           on_progress: Callable[[BaseJob], None] | None = None) -> BaseJob:
    """Tick a batch job from this process every `poll_seconds` until it ends (the commands' --batch).

    Interrupting it leaves the batches running at the provider: the schedule (or the same command
    run again) collects them.
    """
    while True:
        job = model.objects.get(pk=job_id)
        if on_progress is not None:
            on_progress(job)
        if not job.is_active:
            return job
        time.sleep(poll_seconds)
        tick_running(model, job_id, early=True)


def poll_all() -> dict[str, int]:
    """One pass of the schedule over every kind of job."""
    counts = {"ticked": 0, "concluded": 0, "cancelled_polled": 0}
    since = timezone.now() - CANCELLED_WINDOW
    for model in BaseJob.__subclasses__():
        for job_id in list(due(model).values_list("pk", flat=True)):
            counts["ticked"] += 1
            if tick_running(model, job_id) is not None:
                counts["concluded"] += 1
        cancelled = model.objects.filter(mode=JobMode.BATCH, status=JobStatus.CANCELLED, finished_at__gte=since)
        for job_id, batches in cancelled.values_list("pk", "batches"):
            if Book(batches).open():
                counts["cancelled_polled"] += 1
                tick_cancelled(model, job_id)
    return counts

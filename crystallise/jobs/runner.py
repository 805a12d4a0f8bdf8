"""Run a job's items through the LLM: bounded concurrency, batched writes,
cancellation, heartbeats and restart safety, for every kind of job.

Ownership: a run claims the job with a conditional UPDATE that sets a fresh
`lease`; every batch of results is written in the same transaction as an
UPDATE that checks the lease and the `running` status (row-locked), so a run
that was cancelled or superseded can never write another row. Items are the
ones without a result yet, so a resumed job continues where it stopped and
no item gets two results.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import uvloop
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from crystallise.errors import Category
from crystallise.jobs.models import BaseJob, JobSecret, JobStatus
from crystallise.keyvault import SOURCE_REQUEST, decrypt, key_fingerprint
from crystallise.llm import make_client
from crystallise.tokens import Usage, cost_usd

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
FLUSH_SECONDS = 0.25
LOAD_CHUNK = 1000
# After this many papers in a row fail after all retries, the provider is
# treated as down and the job stops instead of burning through the rest.
CIRCUIT_BREAKER = 25
# A job resumed this many times (crashes, lost database) is failed rather than retried forever.
MAX_RUNS = 20


@dataclass
class Outcome:
    """One item's result, ready to be written."""

    row: Any  # unsaved model instance
    usage: Usage = field(default_factory=Usage)
    counters: dict[str, int] = field(default_factory=dict)
    error_category: str | None = None
    error_message: str | None = None
    # A permanent error that means the job cannot go on (rejected key).
    fatal: bool = False


class JobKind(Protocol):
    job_model: type[BaseJob]

    def prepare(self, job: BaseJob) -> None: ...

    def pending_items(self, job: BaseJob, after: int, limit: int) -> Sequence[Any]: ...

    async def process(self, client, job: BaseJob, item: Any) -> Outcome: ...

    def write(self, job: BaseJob, outcomes: list[Outcome]) -> None: ...

    def item_position(self, item: Any) -> int: ...

    def failure_counts(self, job: BaseJob) -> tuple[int, Counter]: ...


def claim(model: type[BaseJob], job_id, token: uuid.UUID) -> bool:
    """Take the job: pending, or running with a dead worker. True if this run owns it."""
    now = timezone.now()
    from datetime import timedelta

    stale = now - timedelta(seconds=settings.CRYSTALLISE_JOB_STALE_SECONDS)
    owned = model.objects.filter(
        Q(status=JobStatus.PENDING) | Q(status=JobStatus.RUNNING, heartbeat_at__lt=stale), pk=job_id
    ).update(status=JobStatus.RUNNING, lease=token, heartbeat_at=now, attempts=F("attempts") + 1, updated_at=now)
    if owned:
        model.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return bool(owned)


def finish(model: type[BaseJob], job_id, token, status: str, *, category=None, message=None) -> bool:
    now = timezone.now()
    done = model.objects.filter(pk=job_id, lease=token, status=JobStatus.RUNNING).update(
        status=status, error_category=category, error_message=message, finished_at=now, updated_at=now, lease=None
    )
    if done:
        JobSecret.objects.filter(job_id=job_id).delete()
    return bool(done)


def fail_unclaimed(model: type[BaseJob], job_id, category: str, message: str) -> bool:
    """Fail an active job that no run owns (kickoff failed, key gone)."""
    now = timezone.now()
    done = model.objects.filter(pk=job_id, status__in=(JobStatus.PENDING, JobStatus.RUNNING)).update(
        status=JobStatus.FAILED, error_category=category, error_message=message, finished_at=now, updated_at=now, lease=None
    )
    JobSecret.objects.filter(job_id=job_id).delete()
    return bool(done)


def _job_key(job: BaseJob) -> tuple[bool, str | None]:
    """(available, key) for the job's OpenAI key: the server's, or the per-request one while its ciphertext exists."""
    if job.openai_key_source == SOURCE_REQUEST:
        secret = JobSecret.objects.filter(job_id=job.pk).first()
        key = decrypt(secret.ciphertext) if secret else None
        return key is not None, key
    if job.llm_backend == "mock":
        return True, None
    key = settings.CRYSTALLISE_OPENAI_API_KEY
    if not key or (job.openai_key_fingerprint and key_fingerprint(key) != job.openai_key_fingerprint):
        return False, None
    return True, key


def yield_cpu_to_web() -> None:
    """Lower this process's CPU priority to CRYSTALLISE_WORKER_NICE (a no-op once there; never raises it)."""
    current = os.nice(0)
    wanted = settings.CRYSTALLISE_WORKER_NICE
    if wanted > current:
        try:
            os.nice(wanted - current)
        except OSError:  # not permitted here: run at the current priority
            logger.warning("Could not lower the worker's CPU priority to nice %s.", wanted)


def run_job(kind: JobKind, job_id, *, concurrency: int | None = None) -> str | None:
    """Run (or resume) one job to a terminal state. Returns the final status, or None if not claimed."""
    model = kind.job_model
    token = uuid.uuid4()
    close_old_connections()
    if not claim(model, job_id, token):
        logger.info("Job %s not claimed (finished, or owned by a live worker).", job_id)
        return None
    job = model.objects.get(pk=job_id)
    if job.attempts > MAX_RUNS:
        finish(model, job_id, token, JobStatus.FAILED, category=Category.INTERNAL,
               message=f"The job was started {MAX_RUNS} times without finishing; gave up. Resubmit it.")
        return JobStatus.FAILED
    available, api_key = _job_key(job)
    if not available:
        finish(
            model, job_id, token, JobStatus.FAILED, category=Category.SERVER_RESTART,
            message="The job was interrupted and its OpenAI key is no longer available "
            "(a per-request key is kept only while the job runs; or the server key was removed or replaced, "
            "and a job never switches keys). Resubmit the job.",
        )
        return JobStatus.FAILED
    yield_cpu_to_web()
    try:
        with _heartbeat(model, job_id, token):
            kind.prepare(job)
        # uvloop: the event loop is most of the worker's CPU after the HTTP client.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            status = loop.run(_Run(kind, job, token, api_key, concurrency).run())
    except Exception:
        logger.exception("Job %s crashed", job_id)
        finish(model, job_id, token, JobStatus.FAILED, category=Category.INTERNAL,
               message="The job failed with an internal error; the failure has been logged.")
        return JobStatus.FAILED
    finally:
        close_old_connections()
    return status


class _Run:
    def __init__(self, kind: JobKind, job: BaseJob, token: uuid.UUID, api_key: str | None, concurrency: int | None):
        self.kind = kind
        self.job = job
        self.model = kind.job_model
        self.token = token
        self.api_key = api_key
        self.concurrency = concurrency or settings.CRYSTALLISE_LLM_CONCURRENCY
        self.buffer: list[Outcome] = []
        self.stop = asyncio.Event()
        self.flush_now = asyncio.Event()
        self.lost = False
        # The database failed past the retry window: leave the job to recovery.
        self.db_failed = False
        self.fatal: tuple[str, str] | None = None
        self.spent = job.usage
        self.consecutive_failures = 0
        # One thread, one DB connection, for every query of this run.
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"job-{job.pk}")

    async def db_call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    async def run(self) -> str | None:
        client = make_client(api_key=self.api_key, backend=self.job.llm_backend, concurrency=self.concurrency)
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.concurrency * 2)
        workers = [asyncio.create_task(self.worker(client, queue)) for _ in range(self.concurrency)]
        producer = asyncio.create_task(self.produce(queue))
        flusher = asyncio.create_task(self.flusher())
        interrupted = False
        try:
            # Workers end on the producer's sentinels, or after their current
            # call once `stop` is set (cancel, lost lease, fatal error).
            await asyncio.gather(*workers)
        except BaseException:
            # Cancelled from outside (Ctrl-C, loop shutdown, KeyboardInterrupt in a task):
            # flush what is done but do not conclude; the job stays running for a takeover.
            interrupted = True
            raise
        finally:
            for task in (producer, *workers):
                task.cancel()
            outcomes = await asyncio.gather(producer, *workers, return_exceptions=True)
            # CancelledError is not an Exception: only real failures count.
            crash = next((o for o in outcomes if isinstance(o, Exception)), None)
            self.stop.set()
            self.flush_now.set()
            await asyncio.gather(flusher, return_exceptions=True)
            await client.aclose()
            try:
                if not (self.lost or self.db_failed):
                    await self.flush()
                if self.lost and self.buffer:
                    # Cancelled or superseded: these answers are not ours to write, but the provider billed them.
                    await self.db_call(self.record_discarded_usage, self.buffer)
                if crash is not None:
                    raise crash
                settled = not (self.lost or self.db_failed or interrupted)
                status = await self.db_call(self.conclude) if settled else None
            finally:
                await self.db_call(_close_connection)
                self.db.shutdown(wait=True)
        return status

    async def produce(self, queue: asyncio.Queue) -> None:
        after = -1
        try:
            while not self.stop.is_set():
                items = await self.db_call(self.kind.pending_items, self.job, after, LOAD_CHUNK)
                if not items:
                    break
                for item in items:
                    if self.stop.is_set():
                        break
                    await queue.put(item)
                after = self.kind.item_position(items[-1])
        except Exception:
            # Wake idle workers so the run ends; the error is re-raised by run().
            self.stop.set()
            for _ in range(self.concurrency):
                try:
                    queue.put_nowait(None)
                except asyncio.QueueFull:
                    break
            raise
        for _ in range(self.concurrency):
            await queue.put(None)

    async def worker(self, client, queue: asyncio.Queue) -> None:
        while True:
            item = await queue.get()
            if item is None or self.stop.is_set():
                return
            outcome = await self.kind.process(client, self.job, item)
            self.buffer.append(outcome)
            self.spent = self.spent + outcome.usage
            self.observe(outcome)
            if len(self.buffer) >= BATCH_SIZE:
                self.flush_now.set()

    def observe(self, outcome: Outcome) -> None:
        if outcome.fatal and self.fatal is None:
            self.fatal = (outcome.error_category or Category.AUTH, outcome.error_message or "The provider rejected the key.")
            self.stop.set()
            return
        if outcome.error_category in (Category.UPSTREAM, Category.RATE_LIMIT):
            self.consecutive_failures += 1
            if self.consecutive_failures >= CIRCUIT_BREAKER and self.fatal is None:
                self.fatal = (
                    outcome.error_category,
                    f"{CIRCUIT_BREAKER} papers in a row failed after all retries; the provider looks unavailable. "
                    f"Last error: {outcome.error_message}",
                )
                self.stop.set()
        elif outcome.error_category is None:
            self.consecutive_failures = 0
        cap = self.job.max_estimated_cost_usd
        if cap is not None and self.job.llm_backend != "mock" and self.fatal is None:
            if cost_usd(self.job.model, self.spent) > Decimal(cap):
                self.fatal = (
                    Category.BUDGET,
                    f"Stopped: the actual cost reached the job's cap max_estimated_cost_usd={cap}.",
                )
                self.stop.set()

    async def flusher(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.flush_now.wait(), FLUSH_SECONDS)
            except TimeoutError:
                pass
            self.flush_now.clear()
            if self.stop.is_set():
                return
            await self.flush()
            if self.lost or self.db_failed:
                self.stop.set()
                return

    async def flush(self) -> None:
        """Write the buffered outcomes; retry a failing database, never drop a batch.

        The buffer is swapped here, on the event loop (where workers append),
        so no outcome can slip between the swap and the write. A batch whose
        write fails goes back to the buffer and is retried with backoff (a
        dropped connection is reopened) for half the stale window; after that
        the run stops without concluding and recovery resumes the job from
        what is persisted.
        """
        batch, self.buffer = self.buffer, []
        deadline = time.monotonic() + settings.CRYSTALLISE_JOB_STALE_SECONDS / 2
        delay = 0.2
        while True:
            try:
                alive = await self.db_call(self.write_batch, batch)
            except DatabaseError:
                logger.warning("Job %s: writing results failed; retrying", self.job.pk, exc_info=True)
                await self.db_call(_close_connection)
                if time.monotonic() + delay > deadline:
                    self.buffer[:0] = batch
                    self.db_failed = True
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not alive:
                self.lost = True
                self.buffer[:0] = batch  # discarded at the end, its usage recorded
            return

    # --- runs in the DB thread -------------------------------------------
    def _usage_updates(self, outcomes: list[Outcome]) -> dict:
        """The job's token counters and cost (not for mock) increased by what `outcomes` used."""
        usage = sum((o.usage for o in outcomes), Usage())
        updates = {
            "input_tokens": F("input_tokens") + usage.input_tokens,
            "cached_input_tokens": F("cached_input_tokens") + usage.cached_input_tokens,
            "output_tokens": F("output_tokens") + usage.output_tokens,
            "reasoning_tokens": F("reasoning_tokens") + usage.reasoning_tokens,
        }
        if self.job.llm_backend != "mock":
            updates["cost_usd"] = F("cost_usd") + cost_usd(self.job.model, usage)
        return updates

    def write_batch(self, batch: list[Outcome]) -> bool:
        """One transaction: check the lease, add counters and usage, insert the results. False if the job is no longer ours."""
        counters: Counter = Counter()
        for outcome in batch:
            counters.update(outcome.counters)
        now = timezone.now()
        updates = {name: F(name) + value for name, value in counters.items() if value}
        updates.update(self._usage_updates(batch), heartbeat_at=now, updated_at=now)
        with transaction.atomic():
            owned = self.model.objects.filter(pk=self.job.pk, lease=self.token, status=JobStatus.RUNNING).update(**updates)
            if not owned:
                return False
            if batch:
                self.kind.write(self.job, batch)
        return True

    def record_discarded_usage(self, outcomes: list[Outcome]) -> None:
        """Add the usage (and cost) of answers that are not written to the job's counters: what the job cost."""
        try:
            self.model.objects.filter(pk=self.job.pk).update(**self._usage_updates(outcomes))
        except DatabaseError:
            logger.warning("Job %s: could not record the usage of %d discarded answers.", self.job.pk, len(outcomes),
                           exc_info=True)

    def conclude(self) -> str | None:
        if self.fatal is not None:
            category, message = self.fatal
            return JobStatus.FAILED if finish(self.model, self.job.pk, self.token, JobStatus.FAILED, category=category, message=message) else None
        if self.kind.pending_items(self.job, -1, 1):
            # Items without a result (a write was lost): not finished. Leave the
            # job running; recovery resumes it from what is persisted.
            logger.error("Job %s ended a run with items left; leaving it to recovery.", self.job.pk)
            return None
        attempted, failures = self.kind.failure_counts(self.job)
        failed_total = sum(failures.values())
        if attempted and failed_total * 2 > attempted:
            category = failures.most_common(1)[0][0]
            message = f"{failed_total} of {attempted} papers failed after all retries ({category})."
            return JobStatus.FAILED if finish(self.model, self.job.pk, self.token, JobStatus.FAILED, category=category, message=message) else None
        return JobStatus.COMPLETED if finish(self.model, self.job.pk, self.token, JobStatus.COMPLETED) else None


@contextmanager
def _heartbeat(model: type[BaseJob], job_id, token: uuid.UUID):
    """Keep the job's heartbeat fresh while a long synchronous step runs (topic
    clustering of 100k papers takes longer than the stale window)."""
    done = threading.Event()
    interval = max(1.0, settings.CRYSTALLISE_JOB_STALE_SECONDS / 4)

    def beat() -> None:
        try:
            while not done.wait(interval):
                model.objects.filter(pk=job_id, lease=token, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _close_connection() -> None:
    # Looked up in the calling thread: `connection` is a per-thread proxy.
    connection.close()

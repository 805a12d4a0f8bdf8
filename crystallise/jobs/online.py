"""The online lane: one LLM call per item, bounded concurrency, batched writes.

Ownership: every batch of results is written in the same transaction as an
UPDATE that checks the run's lease and the `running` status (row-locked), so
a run that was cancelled or superseded can never write another row.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import uvloop
from django.conf import settings
from django.db import DatabaseError, connection

from crystallise.errors import Category
from crystallise.jobs.models import BaseJob, JobMode, ServiceTier
from crystallise.jobs.runner import (
    CIRCUIT_BREAKER,
    JobKind,
    Outcome,
    conclude,
    record_discarded_usage,
    write_outcomes,
)
from crystallise.keyvault import key_fingerprint
from crystallise.llm import make_client
from crystallise.llm.backends import is_billable
from crystallise.ratelimit.shared import SharedLimit
from crystallise.ratelimit.window import Window

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
FLUSH_SECONDS = 0.25
LOAD_CHUNK = 1000
# How often the calls-in-flight bound follows the pacer's target.
ADAPT_SECONDS = 0.1


class OnlineStrategy:
    """One LLM call per item, as many in flight as the provider allows (at most `concurrency`), results
    written in batches.

    Workers take items from a bounded queue fed by the producer; a window
    bounds how many call at once, following the client's pacer (the allowed
    rate times the latency, `crystallise.llm.pacing`); the job's share of the
    key's limit is leased from the shared limiter (`crystallise.ratelimit`).
    A flusher writes what is done every FLUSH_SECONDS or BATCH_SIZE results.
    The run stops after the current calls on cancel (lost lease), a fatal
    error or the job's cost cap.
    """

    name = "online"

    def run(self, kind: JobKind, job: BaseJob, token: uuid.UUID, api_key: str | None, concurrency: int | None) -> str | None:
        # uvloop: the event loop is most of the worker's CPU after the HTTP client.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            return loop.run(_OnlineRun(kind, job, token, api_key, concurrency).run())


class _OnlineRun:
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
        # What the job has cost so far (its persisted cost, then each answer's at its model's price).
        self.spent = Decimal(job.cost_usd)
        self.billable = is_billable(job.llm_backend)
        # A batch job's items that reach this lane (its "fallback": "online") bill at the online price,
        # answers and billed errors alike; otherwise an answer's tier, or the job's.
        self.tier = ServiceTier.DEFAULT if job.mode == JobMode.BATCH else None
        self.consecutive_failures = 0
        # One thread, one DB connection, for every query of this run.
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"job-{job.pk}")

    async def db_call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    async def run(self) -> str | None:
        client = make_client(api_key=self.api_key, backend=self.job.llm_backend, concurrency=self.concurrency)
        pacer = getattr(client, "pacer", None)
        window = Window(self.concurrency)
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.concurrency * 2)
        shared = None
        if pacer is not None and self.api_key:
            # Held back: papers queued while every call the window allows is out.
            shared = SharedLimit(pacer, key_fingerprint(self.api_key), backlog=lambda: window.waiting > 0 and not queue.empty())
            await shared.start(self.db_call)  # the key's known limits and this job's share, before the first call
        if pacer is not None:
            window.resize(pacer.target_concurrency())
        workers = [asyncio.create_task(self.worker(client, queue, window)) for _ in range(self.concurrency)]
        producer = asyncio.create_task(self.produce(queue))
        flusher = asyncio.create_task(self.flusher())
        helpers = [asyncio.create_task(self.adapt(pacer, window))]
        if shared is not None:
            helpers.append(asyncio.create_task(shared.keep(self.db_call)))
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
            for task in (producer, *workers, *helpers):
                task.cancel()
            outcomes = await asyncio.gather(producer, *workers, return_exceptions=True)
            await asyncio.gather(*helpers, return_exceptions=True)
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
                if shared is not None:
                    await self.db_call(shared.release)
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

    async def worker(self, client, queue: asyncio.Queue, window: Window) -> None:
        while await window.acquire():
            try:
                item = await queue.get()
                if item is None or self.stop.is_set():
                    return
                outcome = await self.kind.process(client, self.job, item)
            finally:
                window.release()
            if self.tier is not None:
                outcome.tier = self.tier
            self.buffer.append(outcome)
            self.spent += outcome.cost(self.job)
            self.observe(outcome)
            if len(self.buffer) >= BATCH_SIZE:
                self.flush_now.set()

    async def adapt(self, pacer, window: Window) -> None:
        """Keep the window at the pacer's target; on stop, wake the workers waiting for it."""
        while not self.stop.is_set():
            if pacer is not None:
                window.resize(pacer.target_concurrency())
            try:
                await asyncio.wait_for(self.stop.wait(), ADAPT_SECONDS)
            except TimeoutError:
                pass
        window.close()

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
        if cap is not None and self.billable and self.fatal is None:
            if self.spent > Decimal(cap):
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
    def write_batch(self, batch: list[Outcome]) -> bool:
        return write_outcomes(self.kind, self.job, self.token, batch)

    def record_discarded_usage(self, outcomes: list[Outcome]) -> None:
        record_discarded_usage(self.job, outcomes)

    def conclude(self) -> str | None:
        return conclude(self.kind, self.job, self.token, self.fatal)


def _close_connection() -> None:
    # Looked up in the calling thread: `connection` is a per-thread proxy.
    connection.close()

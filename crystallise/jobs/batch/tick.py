"""One step of a batch-mode job: poll its open batches, collect the ended ones, submit what has
no batch yet (or must be resubmitted), and conclude once every item has its result.

A tick owns the job through its lease (`running` jobs) or, after a cancel, through a lease taken
on the cancelled row (`cancelled` jobs, which only collect what their batches returned). Every
write checks that ownership, so a tick that lost the job writes nothing more.

Collected lines are matched to items by `custom_id` (the output's order is not the input's);
an answer or a permanent error becomes the item's result; a transient error (429/5xx inside
the batch, an answer that does not fit the schema), a line the batch never ran (expired,
cancelled) or a line missing altogether sends the item into a new batch, until it has been in
`CRYSTALLISE_BATCH_MAX_ROUNDS` batches: then it gets the error. With `fallback: "online"` it
goes to the online lane instead, after its first batch.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from crystallise.config import BATCH_ENQUEUED_TOKEN_LIMIT
from crystallise.errors import Category, LLMError
from crystallise.jobs import lifecycle
from crystallise.jobs.batch.book import Book, Runs, custom_id, position_of, refused_lines, runs_of, unanswered
from crystallise.jobs.models import BaseJob, JobStatus
from crystallise.jobs.runner import JobKind, Outcome, conclude, usage_updates, write_outcomes
from crystallise.llm.backends import is_billable
from crystallise.llm.base import CallOptions, LLMResult
from crystallise.llm.batches import (
    MAX_FILE_BYTES,
    MAX_REQUESTS,
    BatchState,
    make_batch_client,
    read_output,
    request_line,
)
from crystallise.tokens import count_message_tokens

logger = logging.getLogger(__name__)

LOAD_CHUNK = 1000
WRITE_CHUNK = 1000


class BatchKind(JobKind, Protocol):
    """What the batch lane needs of a job kind beyond the runner's `JobKind` (`process` is their composition)."""

    options: CallOptions  # set by `prepare`: the answer schema collected lines are validated against

    def request(self, job: BaseJob, item: Any) -> tuple[list[dict], CallOptions] | Outcome:
        """The call for `item`, or its outcome when it is decided without one."""

    def outcome(self, job: BaseJob, item: Any, answer: LLMResult | LLMError) -> Outcome:
        """The item's result from an answer, or from the error that stands instead of one."""

    def items_at(self, job: BaseJob, positions: list[int]) -> list[Any]:
        """The items at `positions` without a result yet."""


class LeaseLost(Exception):
    """The tick no longer owns the job (cancelled, superseded): stop without writing."""


def enqueued_token_limit(model: str) -> int:
    overrides = settings.CRYSTALLISE_BATCH_ENQUEUED_TOKENS
    return int(overrides.get(model) or BATCH_ENQUEUED_TOKEN_LIMIT.get(model) or 2_000_000)


class BatchTick:
    def __init__(self, kind: BatchKind, job: BaseJob, token: uuid.UUID, api_key: str | None) -> None:
        self.kind = kind
        self.job = job
        self.model = kind.job_model
        self.token = token
        self.api_key = api_key
        self.book = Book(job.batches)
        self.cancelled = job.status == JobStatus.CANCELLED
        self.client = make_batch_client(api_key=api_key, backend=job.llm_backend)
        # With fallback "online" an item gets one batch; what it does not answer goes to the online lane.
        self.max_rounds = 1 if job.fallback == "online" else settings.CRYSTALLISE_BATCH_MAX_ROUNDS
        self.max_requests = min(MAX_REQUESTS, settings.CRYSTALLISE_BATCH_MAX_REQUESTS)
        self.fatal: tuple[str, str] | None = None
        self.system_tokens: dict[str, int] = {}  # the job's system prompt, counted once per tick
        # A provider call failed transiently: the job waits for the next tick instead of concluding.
        self.retry_later = False

    # --- ownership and writes ------------------------------------------------
    def owned(self):
        if self.cancelled:
            return self.model.objects.filter(pk=self.job.pk, lease=self.token, status=JobStatus.CANCELLED)
        return lifecycle.owned(self.model, self.job.pk, self.token)

    def save_book(self) -> None:
        if not self.owned().update(batches=self.book.entries, updated_at=timezone.now()):
            raise LeaseLost

    def store(self, outcomes: list[Outcome], entry: dict | None = None, billed: list[Outcome] = ()) -> None:
        """Write `outcomes`, add the usage of `billed` answers that are not kept (retried), and mark `entry`
        collected, in one transaction (a crash writes none of it)."""
        with transaction.atomic():
            if self.cancelled:
                rows = self.owned()
                if not rows.select_for_update().exists():
                    raise LeaseLost
                counters: dict[str, int] = {}
                for outcome in outcomes:
                    for name, value in outcome.counters.items():
                        counters[name] = counters.get(name, 0) + value
                rows.update(**{n: F(n) + v for n, v in counters.items() if v}, **usage_updates(self.job, outcomes))
                if outcomes:
                    self.kind.write(self.job, outcomes)
            else:
                for start in range(0, len(outcomes), WRITE_CHUNK):
                    if not write_outcomes(self.kind, self.job, self.token, outcomes[start:start + WRITE_CHUNK]):
                        raise LeaseLost
            if billed and not self.owned().update(**usage_updates(self.job, list(billed))):
                raise LeaseLost
            if entry is not None:
                entry["collected"] = True
            self.save_book()
        for outcome in outcomes:
            if outcome.fatal and self.fatal is None:
                self.fatal = (outcome.error_category or Category.AUTH, outcome.error_message or "The key was rejected.")

    # --- the step -------------------------------------------------------------
    def run(self) -> str | None:
        """Advance the job; its final status, or None while batches are in flight (or the job was lost)."""
        try:
            for _ in range(settings.CRYSTALLISE_BATCH_MAX_ROUNDS + 2):
                self.poll()
                if not self.cancelled and self.fatal is None:
                    self.check_cap()
                if self.cancelled or self.fatal:
                    break
                if not self.submit():
                    break
                if not any(e.get("status") in ("completed", "expired", "failed", "cancelled") for e in self.book.open()):
                    break  # what was just submitted is in the provider's hands
            if self.cancelled:
                return None
            if self.fatal is None and (self.book.open() or self.retry_later):
                return None
            if self.fatal is None and self.job.fallback == "online" and self.kind.pending_items(self.job, -1, 1):
                from crystallise.jobs.online import OnlineStrategy

                # The cost cap counts what this tick's batches just added.
                self.job.refresh_from_db(fields=["cost_usd", "input_tokens", "cached_input_tokens", "output_tokens",
                                                 "reasoning_tokens"])
                return OnlineStrategy().run(self.kind, self.job, self.token, self.api_key, None)
            if self.fatal is not None:
                self.cancel_open()
            return conclude(self.kind, self.job, self.token, self.fatal)
        except LeaseLost:
            logger.info("Job %s: the batch tick lost the job.", self.job.pk)
            return None
        finally:
            self.client.close()

    def check_cap(self) -> None:
        """The job's actual cost reached `max_estimated_cost_usd`: stop (its open batches are cancelled)."""
        cap = self.job.max_estimated_cost_usd
        if cap is None or not is_billable(self.job.llm_backend):
            return
        if self.model.objects.values_list("cost_usd", flat=True).get(pk=self.job.pk) > cap:
            self.fatal = (Category.BUDGET, f"Stopped: the actual cost reached the job's cap max_estimated_cost_usd={cap}.")

    def poll(self) -> None:
        for entry in self.book.open():
            try:
                if entry.get("id") is None:
                    # Uploaded but its create's reply was lost (or is still on its way): find it.
                    state = self.client.find(entry["file"])
                    if state is None and self.cancelled:
                        entry.update(status="cancelled", collected=True)
                        continue
                    if state is None:
                        state = self.client.create(entry["file"], self.metadata())
                    elif self.cancelled and not state.terminal:
                        entry["cancel_requested"] = True
                        state = self.client.cancel(state.id)
                elif self.cancelled and not entry.get("cancel_requested") and entry.get("status") not in (
                        "completed", "expired", "failed", "cancelled"):
                    entry["cancel_requested"] = True
                    state = self.client.cancel(entry["id"])
                else:
                    state = self.client.retrieve(entry["id"])
            except LLMError as exc:
                if exc.category == Category.AUTH:
                    self.fatal = (Category.AUTH, exc.detail)
                    return
                logger.warning("Job %s: polling batch %s failed: %s", self.job.pk, entry.get("id"), exc.detail)
                continue
            self.note(entry, state)
            if state.terminal:
                self.collect(entry, state)
        self.save_book()

    @staticmethod
    def note(entry: dict, state) -> None:
        entry.update(id=state.id, status=state.status, counts=state.counts, output_file=state.output_file_id,
                     error_file=state.error_file_id, error="; ".join(state.errors)[:1000] or entry.get("error"))

    def metadata(self) -> dict[str, str]:
        return {"job": str(self.job.pk), "kind": self.model._meta.label_lower}

    # --- collecting --------------------------------------------------------------
    def collect(self, entry: dict, state) -> None:
        schema = self.kind.options.schema
        answers = {}
        try:
            for file_id in (state.output_file_id, state.error_file_id):
                if not file_id:
                    continue
                for answer in read_output(self.client.content(file_id), schema, self.client.backend):
                    position = position_of(answer.custom_id)
                    if position is not None and (answer.result is not None or position not in answers):
                        answers[position] = answer
        except LLMError as exc:
            logger.warning("Job %s: downloading batch %s failed: %s", self.job.pk, entry["id"], exc.detail)
            return  # collected at the next tick
        bad_lines = refused_lines(entry, state)
        tries = self.book.tries(exclude=entry)
        runs = Runs(entry["runs"])
        outcomes: list[Outcome] = []
        billed: list[Outcome] = []
        positions = list(runs.positions())
        for start in range(0, len(positions), LOAD_CHUNK):
            for item in self.kind.items_at(self.job, positions[start:start + LOAD_CHUNK]):
                position = self.kind.item_position(item)
                answer = answers.get(position)
                if answer is not None and answer.result is not None:
                    outcomes.append(self.kind.outcome(self.job, item, answer.result))
                    continue
                error = answer.error if answer is not None else bad_lines.get(position) or unanswered(entry)
                if error.permanent:
                    outcomes.append(self.kind.outcome(self.job, item, error))
                    continue
                usage = getattr(error, "usage", None)
                final = tries.get(position, 0) + 1 >= self.max_rounds
                if final and not self.cancelled and self.job.fallback != "online":
                    outcomes.append(self.kind.outcome(self.job, item, error))
                elif usage is not None:
                    billed.append(Outcome(row=None, usage=usage))  # a billed answer that is retried
        self.store(outcomes, entry, billed)

    # --- submitting ---------------------------------------------------------------
    def submit(self) -> int:
        """Put the items without a result and without an open batch into new batches, within the limits.
        Returns how many batches were created."""
        open_runs = self.book.open_runs()
        tries = self.book.tries()
        budget = enqueued_token_limit(self.job.model) - self.book.enqueued_tokens()
        direct: list[Outcome] = []
        chunk: list[tuple[int, bytes, int]] = []
        size = tokens = created = 0
        after = -1
        full = False
        while not full:
            items = self.kind.pending_items(self.job, after, LOAD_CHUNK)
            if not items:
                break
            after = self.kind.item_position(items[-1])
            for item in items:
                position = self.kind.item_position(item)
                in_flight = max((runs.end_of(position) for runs in open_runs), default=-1)
                if in_flight >= 0:
                    # Skip the rest of that run with the next query, not row by row (a 50,000-item batch in flight).
                    after = in_flight
                    break
                if tries.get(position, 0) >= self.max_rounds:
                    continue
                request = self.kind.request(self.job, item)
                if isinstance(request, Outcome):
                    direct.append(request)
                    continue
                messages, options = request
                line = request_line(custom_id(position), messages, options)
                cost = count_message_tokens(messages, self.system_tokens)
                if chunk and (len(chunk) >= self.max_requests or size + len(line) > MAX_FILE_BYTES
                              or tokens + cost > budget):
                    created += self.send(chunk, tries)
                    budget -= tokens
                    chunk, size, tokens = [], 0, 0
                if cost > budget:
                    if not self.book.open() and not created:
                        # Over the cap on its own: no batch can ever hold it.
                        direct.append(self.kind.outcome(self.job, item, LLMError(
                            f"This request ({cost} tokens) is over the batch token cap of {self.job.model}.",
                            category=Category.VALIDATION, permanent=True)))
                        continue
                    full = True  # the rest waits until batches in flight end
                    break
                chunk.append((position, line, cost))
                size += len(line)
                tokens += cost
            if len(direct) >= WRITE_CHUNK:
                self.store(direct)
                direct = []
        if chunk:
            created += self.send(chunk, tries)
        if direct:
            self.store(direct)
        return created

    def send(self, chunk: list[tuple[int, bytes, int]], tries: dict[int, int]) -> int:
        positions = [p for p, _, _ in chunk]
        entry = {"id": None, "file": None, "status": "uploading", "runs": runs_of(positions),
                 "round": 1 + max(tries.get(p, 0) for p in positions), "requests": len(chunk),
                 "tokens": sum(c for _, _, c in chunk), "collected": False}
        try:
            entry["file"] = self.client.upload(b"".join(line for _, line, _ in chunk),
                                               f"{self.job.pk}-{len(self.book.entries) + 1}.jsonl")
        except LLMError as exc:
            self.failed_call(exc, "uploading a batch file")
            return 0
        entry["status"] = "uploaded"
        self.book.entries.append(entry)
        self.save_book()  # the file is recorded before the batch exists: a restart finds it, never re-sends it
        try:
            state = self.client.create(entry["file"], self.metadata())
        except LLMError as exc:
            if exc.permanent and exc.category != Category.AUTH:
                entry.update(status="failed", error=exc.detail[:1000])
                self.collect_failed_create(entry)
            else:
                self.failed_call(exc, "creating a batch")
            self.save_book()
            return 0
        self.note(entry, state)
        try:
            self.save_book()
        except LeaseLost:
            self.cancel_orphan(state.id)
            raise
        return 1

    def cancel_orphan(self, batch_id: str) -> None:
        """The job was cancelled while this batch was being created: its id could not be recorded, so
        nothing else would stop it. (A job taken over by another tick is left alone: that one finds it.)"""
        if not self.model.objects.filter(pk=self.job.pk, status=JobStatus.CANCELLED).exists():
            return
        logger.warning("Job %s was cancelled while batch %s was created: cancelling it", self.job.pk, batch_id)
        try:
            self.client.cancel(batch_id)
        except LLMError as exc:
            logger.warning("Job %s: cancelling batch %s failed: %s", self.job.pk, batch_id, exc.detail)

    def collect_failed_create(self, entry: dict) -> None:
        self.collect(entry, BatchState(id="", status="failed"))

    def failed_call(self, exc: LLMError, what: str) -> None:
        if exc.category == Category.AUTH:
            self.fatal = (Category.AUTH, exc.detail)
        self.retry_later = True  # the items stay unsent; the next tick tries again
        logger.warning("Job %s: %s failed: %s", self.job.pk, what, exc.detail)

    def cancel_open(self) -> None:
        """The job ends early (rejected key, cost cap): stop what is still running at the provider."""
        for entry in self.book.open():
            if entry.get("id") and entry.get("status") not in ("completed", "expired", "failed", "cancelled"):
                try:
                    self.client.cancel(entry["id"])
                except LLMError:
                    logger.warning("Job %s: cancelling batch %s failed", self.job.pk, entry["id"])

"""Run a job to a terminal state: claim it, find its key, hand its items to
the job's processing strategy (lane), and conclude from what is persisted.

What is shared by every strategy lives here: the `JobKind` a job's app
provides, the `Outcome` of one item, writing a batch of outcomes under the
run's lease, and the conclusion. State changes go through
`crystallise.jobs.lifecycle`; the online lane is `crystallise.jobs.online`.
Items are the ones without a result yet, so a resumed job continues where it
stopped and no item gets two results.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import F

from crystallise.background import every
from crystallise.errors import Category, LLMError
from crystallise.jobs import lifecycle
from crystallise.jobs.models import BaseJob, JobStatus
from crystallise.jobs.priority import yield_cpu_to_web
from crystallise.keyvault import job_openai_key
from crystallise.llm.backends import is_billable
from crystallise.tokens import Usage, cost_usd

logger = logging.getLogger(__name__)

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
    # When more than the job's model answered for this item: each model's part of `usage` (priced apart).
    usage_by_model: dict[str, Usage] | None = None
    # The price tier the provider says it billed (a flex call answered in the default tier); None: the job's.
    tier: str | None = None

    def cost(self, job: BaseJob) -> Decimal:
        """What this item's calls cost at each model's price in the tier they ran in (zero on an unbilled backend)."""
        if not is_billable(job.llm_backend):
            return Decimal("0")
        tier = self.tier or job.price_tier
        if self.usage_by_model:
            return sum((cost_usd(model, usage, tier) for model, usage in self.usage_by_model.items()), Decimal("0"))
        return cost_usd(job.model, self.usage, tier)


class Strategy(Protocol):
    """How a job's items reach the LLM (a lane). `run` returns the final status, or None when not concluded."""

    name: str

    def run(self, kind: JobKind, job: BaseJob, token: uuid.UUID, api_key: str | None,
            concurrency: int | None) -> str | None: ...


class JobKind(Protocol):
    """What an app tells the runner about its jobs."""

    job_model: type[BaseJob]

    def strategy(self, job: BaseJob) -> Strategy: ...

    def prepare(self, job: BaseJob) -> None: ...

    def pending_items(self, job: BaseJob, after: int, limit: int) -> Sequence[Any]: ...

    async def process(self, client, job: BaseJob, item: Any) -> Outcome: ...

    def write(self, job: BaseJob, outcomes: list[Outcome]) -> None: ...

    def item_position(self, item: Any) -> int: ...

    def failure_counts(self, job: BaseJob) -> tuple[int, Counter]: ...


class OnlineKind:
    """Base of the apps' job kinds: a job runs in the online lane, or in the batch lane
    (`crystallise.jobs.batch`) when its `mode` is "batch"."""

    def strategy(self, job: BaseJob) -> Strategy:
        if job.mode == "batch":
            from crystallise.jobs.batch import BatchStrategy

            return BatchStrategy()
        from crystallise.jobs.online import OnlineStrategy

        return OnlineStrategy()

    async def process(self, client, job: BaseJob, item: Any) -> Outcome:
        """The online lane's step for one item: the kind's request, one call, the kind's outcome."""
        request = self.request(job, item)
        if isinstance(request, Outcome):  # decided without a call
            return request
        messages, options = request
        try:
            answer = await client.complete(messages, options)
        except LLMError as exc:
            return self.outcome(job, item, exc)
        return await self.follow_up(client, job, messages, self.outcome(job, item, answer))

    async def follow_up(self, client, job: BaseJob, messages: list[dict], outcome: Outcome) -> Outcome:
        """More calls about an answered item in the same step (screening's second opinion); none by default."""
        return outcome


def run_job(kind: JobKind, job_id, *, concurrency: int | None = None) -> str | None:
    """Run (or resume) one job to a terminal state. Returns the final status, or None if not claimed or not concluded."""
    model = kind.job_model
    token = uuid.uuid4()
    close_old_connections()
    if not lifecycle.claim(model, job_id, token):
        logger.info("Job %s not claimed (finished, or owned by a live worker).", job_id)
        return None
    job = model.objects.get(pk=job_id)
    if job.attempts > MAX_RUNS:
        lifecycle.finish(model, job_id, token, JobStatus.FAILED, category=Category.INTERNAL,
                         message=f"The job was started {MAX_RUNS} times without finishing; gave up. Resubmit it.")
        return JobStatus.FAILED
    available, api_key = job_openai_key(job)
    if not available:
        lifecycle.finish(
            model, job_id, token, JobStatus.FAILED, category=Category.SERVER_RESTART,
            message="The job was interrupted and its OpenAI key is no longer available "
            "(a per-request key is kept only while the job runs; or the server key was removed or replaced, "
            "and a job never switches keys). Resubmit the job.",
        )
        return JobStatus.FAILED
    yield_cpu_to_web()
    try:
        with keep_alive(model, job_id, token):
            kind.prepare(job)
        status = kind.strategy(job).run(kind, job, token, api_key, concurrency)
    except Exception:
        logger.exception("Job %s crashed", job_id)
        lifecycle.finish(model, job_id, token, JobStatus.FAILED, category=Category.INTERNAL,
                         message="The job failed with an internal error; the failure has been logged.")
        return JobStatus.FAILED
    finally:
        close_old_connections()
    return status


# --- shared by the strategies; these run in a database thread -------------
def usage_updates(job: BaseJob, outcomes: list[Outcome]) -> dict:
    """The job's token counters and cost (billable backends) increased by what `outcomes` used."""
    usage = sum((o.usage for o in outcomes), Usage())
    updates = {
        "input_tokens": F("input_tokens") + usage.input_tokens,
        "cached_input_tokens": F("cached_input_tokens") + usage.cached_input_tokens,
        "output_tokens": F("output_tokens") + usage.output_tokens,
        "reasoning_tokens": F("reasoning_tokens") + usage.reasoning_tokens,
    }
    if is_billable(job.llm_backend):
        updates["cost_usd"] = F("cost_usd") + sum((o.cost(job) for o in outcomes), Decimal("0"))
    return updates


def write_outcomes(kind: JobKind, job: BaseJob, token: uuid.UUID, batch: list[Outcome]) -> bool:
    """One transaction: check the lease, add counters and usage, insert the results. False if the job is no longer ours."""
    counters: Counter = Counter()
    for outcome in batch:
        counters.update(outcome.counters)
    updates = {name: F(name) + value for name, value in counters.items() if value}
    updates.update(usage_updates(job, batch))
    with transaction.atomic():
        if not lifecycle.heartbeat(kind.job_model, job.pk, token, **updates):
            return False
        if batch:
            kind.write(job, batch)
    return True


def record_discarded_usage(job: BaseJob, outcomes: list[Outcome]) -> None:
    """Add the usage (and cost) of answers that are not written to the job's counters: what the job cost."""
    try:
        type(job).objects.filter(pk=job.pk).update(**usage_updates(job, outcomes))
    except DatabaseError:
        logger.warning("Job %s: could not record the usage of %d discarded answers.", job.pk, len(outcomes),
                       exc_info=True)


def conclude(kind: JobKind, job: BaseJob, token: uuid.UUID, fatal: tuple[str, str] | None) -> str | None:
    """Finish the job from its persisted results; None (left to recovery) while items have none."""
    model = kind.job_model
    if fatal is not None:
        category, message = fatal
        return JobStatus.FAILED if lifecycle.finish(model, job.pk, token, JobStatus.FAILED, category=category,
                                                    message=message) else None
    if kind.pending_items(job, -1, 1):
        # Items without a result (a write was lost): not finished. Leave the
        # job running; recovery resumes it from what is persisted.
        logger.error("Job %s ended a run with items left; leaving it to recovery.", job.pk)
        return None
    attempted, failures = kind.failure_counts(job)
    failed_total = sum(failures.values())
    if attempted and failed_total * 2 > attempted:
        category = failures.most_common(1)[0][0]
        message = f"{failed_total} of {attempted} papers failed after all retries ({category})."
        return JobStatus.FAILED if lifecycle.finish(model, job.pk, token, JobStatus.FAILED, category=category,
                                                    message=message) else None
    return JobStatus.COMPLETED if lifecycle.finish(model, job.pk, token, JobStatus.COMPLETED) else None


@contextmanager
def keep_alive(model: type[BaseJob], job_id, token: uuid.UUID):
    """Keep the job's heartbeat fresh while a long synchronous step runs (topic
    clustering of 100k papers takes longer than the stale window)."""
    interval = max(1.0, settings.CRYSTALLISE_JOB_STALE_SECONDS / 4)
    with every(interval, lambda: lifecycle.heartbeat(model, job_id, token), name=f"heartbeat-{job_id}"):
        yield

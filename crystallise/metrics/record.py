"""What the service counts, at the two places where it happens.

- Every request to the LLM provider (one attempt of a call; retries count
  again): `observed_attempt()` wraps it in the OpenAI client and records the
  outcome, error category, latency, tokens and cost by model.
- Every job run on a worker: `job_run_observed()` wraps the task, sets the
  log context (`crystallise.jsonlog`), flushes the counters while it runs,
  and at the end adds the items this run decided and, for a run that
  finished the job, its duration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from crystallise.errors import Category, LLMError
from crystallise.jsonlog import job_context
from crystallise.metrics.store import TALLY, flushing_every
from crystallise.tokens import Usage, cost_usd

T = TypeVar("T")

# Seconds; provider answers take from well under a second to minutes (reasoning, retries after 429).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Seconds; jobs take from seconds (a handful of papers) to hours (100,000).
JOB_DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
# Progress counters per kind of job, and the label value each contributes.
ITEM_OUTCOMES = {
    "screening": {"included": "included", "excluded": "excluded", "errored": "errored"},
    "indexing": {"ok": "ok", "errored": "errored"},
}


def bucket_label(value: float, buckets: tuple[float, ...]) -> str:
    """The `le` of the first bucket that holds `value` (stored per bucket, made cumulative at scrape time)."""
    for bound in buckets:
        if value <= bound:
            return repr(bound)
    return "+Inf"


def observe(name: str, labels: dict[str, object], value: float, buckets: tuple[float, ...]) -> None:
    TALLY.add(f"{name}_bucket", {**labels, "le": bucket_label(value, buckets)})
    TALLY.add(f"{name}_sum", labels, value)


def llm_request(*, model: str, seconds: float, outcome: str, category: str | None, usage: Usage | None,
                tier: str = "default") -> None:
    TALLY.add("llm_requests", {"model": model, "outcome": outcome, "error_category": category or ""})
    observe("llm_request_seconds", {"model": model}, seconds, LATENCY_BUCKETS)
    if usage is None:
        return
    for kind, tokens in usage.as_dict().items():
        TALLY.add("llm_tokens", {"model": model, "type": kind.removesuffix("_tokens")}, tokens)
    try:
        cost = float(cost_usd(model, usage, tier))
    except (KeyError, ValueError):  # a model or tier without a price: tokens only
        return
    TALLY.add("llm_cost_usd", {"model": model}, cost)


async def observed_attempt(attempt: Awaitable[T], model: str) -> T:
    """Await one request to the provider and record it; the result or error passes through unchanged."""
    started = time.perf_counter()
    try:
        result = await attempt
    except LLMError as exc:
        # A 200 whose content did not fit (bad_output) was billed: its usage is on the error.
        outcome = "bad_output" if exc.bad_output else "error"
        llm_request(model=model, seconds=time.perf_counter() - started, outcome=outcome, category=exc.category,
                    usage=getattr(exc, "usage", None) if exc.bad_output else None)
        raise
    except Exception:
        llm_request(model=model, seconds=time.perf_counter() - started, outcome="error", category=Category.INTERNAL,
                    usage=None)
        raise
    # The attempt's result: (parsed, usage, ...) and, when the provider said so, the tier that billed it.
    tier = result[3] if len(result) > 3 and result[3] in ("flex", "default") else "default"
    llm_request(model=model, seconds=time.perf_counter() - started, outcome="ok", category=None, usage=result[1],
                tier=tier)
    return result


# The `kind` label of each job model's app.
KIND_OF_APP = {"screening": "screening", "indexer": "indexing"}


def has_lane(model) -> bool:
    """The job model has a `mode` (online or batch); one without runs online only."""
    return any(f.name == "mode" for f in model._meta.get_fields())


def _progress_rows(model, kind: str, **filters) -> dict:
    lane_field = ["mode"] if has_lane(model) else []
    rows = model.objects.filter(**filters).values(
        "pk", *ITEM_OUTCOMES[kind], *lane_field, "status", "started_at", "finished_at")
    return {row.pop("pk"): row for row in rows}


def _progress(model, job_id, kind: str) -> dict | None:
    return _progress_rows(model, kind, pk=job_id).get(model._meta.pk.to_python(job_id))


@contextmanager
def job_run_observed(model, job_id, *, kind: str) -> Iterator[None]:
    """Wrap one run of a job (a django-q2 task): log context, periodic flushes, items and duration."""
    with job_context(job_id):
        before = _safe(_progress, model, job_id, kind)
        with flushing_every():
            try:
                yield
            finally:
                after = _safe(_progress, model, job_id, kind)
                if before is not None and after is not None:
                    _record_run(kind, before, after)


@contextmanager
def batch_poll_observed() -> Iterator[None]:
    """Wrap a poll of the batch lane (`crystallise.tasks.poll_batches`): the items and durations of the
    active batch-mode jobs it advanced, as `job_run_observed` does for a run."""
    from crystallise.jobs.models import ACTIVE_STATUSES, BaseJob

    models = [(m, KIND_OF_APP[m._meta.app_label]) for m in BaseJob.__subclasses__()
              if m._meta.app_label in KIND_OF_APP and has_lane(m)]
    before = {m: _safe(_progress_rows, m, kind, mode="batch", status__in=ACTIVE_STATUSES) for m, kind in models}
    with flushing_every():
        try:
            yield
        finally:
            for model, kind in models:
                if not before[model]:
                    continue
                after = _safe(_progress_rows, model, kind, pk__in=list(before[model])) or {}
                for pk, row in after.items():
                    _record_run(kind, before[model][pk], row)


def _record_run(kind: str, before: dict, after: dict) -> None:
    lane = str(after.get("mode") or "online")
    for field, outcome in ITEM_OUTCOMES[kind].items():
        TALLY.add("items", {"kind": kind, "lane": lane, "outcome": outcome}, max(0, after[field] - before[field]))
    ended_here = before["finished_at"] is None and after["finished_at"] is not None
    if ended_here and after["started_at"] is not None:
        seconds = (after["finished_at"] - after["started_at"]).total_seconds()
        if math.isfinite(seconds) and seconds >= 0:
            observe("job_seconds", {"kind": kind, "lane": lane, "status": after["status"]}, seconds,
                    JOB_DURATION_BUCKETS)


def _safe(fn, *args, **kwargs):
    from django.db import DatabaseError

    try:
        return fn(*args, **kwargs)
    except DatabaseError:  # counting must never stop a job from running (the database may be down)
        return None

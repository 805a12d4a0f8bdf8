"""AutoIndexer workflows: index a small batch in the request, or create, run and delete jobs.

Provider errors of one record (rate limit or 5xx after retries) give that
record `llm_error` and never fail the batch; a rejected key (`auth`) fails
the whole request (`400 auth`) or job at once, since every other call would
fail the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q

from crystallise.auth import Caller
from crystallise.config import model_capabilities, validate_lane
from crystallise.errors import Category, LLMError
from crystallise.jobs import lifecycle
from crystallise.jobs.runner import OnlineKind, Outcome, run_job
from crystallise.keyvault import SOURCE_REQUEST, ResolvedKey
from crystallise.llm import make_client
from crystallise.llm.backends import get_backend
from crystallise.llm.base import CallOptions, LLMResult
from crystallise.preflight import Preflight, preflight
from crystallise.ratelimit import lease
from crystallise.tokens import Usage, count_message_tokens, estimate_cost_usd, get_encoding
from indexer import prompts
from indexer.models import IndexJob, IndexResult, Record
from indexer.precheck import Status, precheck

RECORD_INSERT_BATCH = 2000


def output_budget(fields: list[str]) -> int:
    """Max output tokens per record: terse fields plus room for minimal reasoning."""
    return 200 + 80 * len(fields)


def call_options(*, model: str, fields: list[str], cache_key: str | None = None) -> CallOptions:
    return CallOptions(
        model=model,
        schema=prompts.schema_for(tuple(fields)),
        max_output_tokens=output_budget(fields),
        reasoning_effort="minimal" if model_capabilities[model].reasoning else None,
        cache_key=cache_key,
    )


def estimate_index_cost(*, model: str, fields: list[str], records: list[dict], tier: str = "default") -> Decimal:
    """Real token counts of the prompts that will be sent (prechecked records send none) plus the output budget."""
    texts = []
    for record in records:
        status, _, cleaned = precheck(record.get("abstract"))
        if status == Status.OK:
            texts.append(prompts.messages_for(record.get("title") or "", cleaned)[1]["content"])
    fixed = count_message_tokens(prompts.messages_for("", "")[:1] + [{"role": "user", "content": ""}])
    variable = sum(len(t) for t in get_encoding().encode_ordinary_batch(texts)) if texts else 0
    return estimate_cost_usd(model, input_tokens=fixed * len(texts) + variable,
                             output_tokens=output_budget(fields) * len(texts), tier=tier)


def _preflight(*, caller: Caller | None, model: str | None, records: list[dict], fields: list[str],
               cap: Decimal | None, request_openai_key: str | None, tier: str = "default") -> Preflight:
    return preflight(
        caller=caller, model=model, request_openai_key=request_openai_key, cap=cap,
        estimate=lambda m: estimate_index_cost(model=m, fields=fields, records=records, tier=tier),
        advice="Raise the cap, index fewer records, request fewer fields, or pick a cheaper model.",
    )


@dataclass
class Indexed:
    """One record's indexing outcome."""

    status: str
    error: str | None = None
    fields: dict[str, Any] | None = None
    category: str | None = None
    usage: Usage | None = None
    backend: str = ""


async def record_index(client, options: CallOptions, *, title: str, abstract: str | None) -> Indexed:
    """Precheck, then one LLM call for an indexable record. Raises LLMError only for `auth`."""
    status, error, cleaned = precheck(abstract)
    if status != Status.OK:
        return Indexed(status, error, backend=client.backend)  # no call made; the backend that would have answered
    try:
        answer = await client.complete(prompts.messages_for(title, cleaned), options)
    except LLMError as exc:
        if exc.category == Category.AUTH:
            raise
        return Indexed(Status.LLM_ERROR, exc.detail, category=exc.category,
                       usage=getattr(exc, "usage", None) or Usage(), backend=client.backend)
    return Indexed(Status.OK, fields=answer.parsed.model_dump(), usage=answer.usage, backend=answer.backend)


def index_run(
    *,
    caller: Caller,
    model: str | None,
    records: list[dict],
    fields: list[str],
    max_estimated_cost_usd: Decimal | None,
    request_openai_key: str | None,
) -> dict[str, Any]:
    """Index up to 100 records in the request, concurrently; the response body."""
    checked = _preflight(caller=caller, model=model, records=records, fields=fields, cap=max_estimated_cost_usd,
                         request_openai_key=request_openai_key)
    model, backend = checked.model, checked.backend
    # The key's limits as jobs on it learnt them: the calls start paced, not as one burst of up to 100.
    limits = lease.known_limits(checked.key.fingerprint) if checked.key.key else (None, None)
    outcomes = asyncio.run(_index_all(checked.key, backend.name, call_options(model=model, fields=fields), records,
                                      limits))
    usage = sum((o.usage for o in outcomes if o.usage), Usage())
    used_backend = next((o.backend for o in outcomes if o.backend), backend.name)
    out, errors = [], []
    for record, outcome in zip(records, outcomes, strict=True):
        out.append({"id": record["id"], "indexing_status": outcome.status, "extraction_error": outcome.error,
                    "fields": outcome.fields})
        if outcome.status != Status.OK:
            errors.append({"id": record["id"], "indexing_status": outcome.status, "extraction_error": outcome.error})
    return {
        "records": out,
        "errors": errors,
        "usage": usage.as_dict(),
        "cost_usd": get_backend(used_backend).cost(model, usage),
        "llm_backend": used_backend,
    }


async def _index_all(resolved: ResolvedKey, backend: str, options: CallOptions, records: list[dict],
                     limits: tuple[float | None, float | None] = (None, None)) -> list[Indexed]:
    concurrency = min(settings.CRYSTALLISE_LLM_CONCURRENCY, max(1, len(records)))
    client = make_client(api_key=resolved.key, backend=backend, concurrency=concurrency)
    pacer = getattr(client, "pacer", None)
    if pacer is not None and any(limits):
        pacer.set_limits(*limits)
    gate = asyncio.Semaphore(concurrency)

    limit = settings.CRYSTALLISE_SYNC_TIMEOUT
    deadline = asyncio.get_running_loop().time() + limit

    async def one(record: dict) -> Indexed:
        try:
            async with asyncio.timeout_at(deadline):
                async with gate:
                    return await record_index(client, options, title=record.get("title") or "",
                                              abstract=record.get("abstract"))
        except TimeoutError:
            return Indexed(Status.LLM_ERROR, f"No answer within this request's time limit ({limit:g} s, retries "
                           "included); send large or slow batches to POST /v1/indexer/jobs.",
                           category=Category.UPSTREAM, usage=Usage(), backend=client.backend)

    try:
        # A TaskGroup cancels the other calls as soon as one raises (a rejected key).
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(r)) for r in records]
    except* LLMError as failed:
        raise failed.exceptions[0] from None
    finally:
        await client.aclose()
    return [t.result() for t in tasks]


def job_create(
    *,
    caller: Caller | None,
    model: str | None,
    records: list[dict],
    fields: list[str],
    max_estimated_cost_usd: Decimal | None = None,
    request_openai_key: str | None = None,
    owner: str | None = None,
    idempotency_key: str | None = None,
    source: str = "api",
    mode: str = "online",
    fallback: str = "none",
    service_tier: str = "default",
    enqueue: bool = True,
) -> IndexJob:
    """Validate, estimate and store an index job; enqueue it for a worker unless `enqueue` is False (the CLI)."""
    tier = validate_lane(model=model, mode=mode, service_tier=service_tier, fallback=fallback)
    checked = _preflight(caller=caller, model=model, records=records, fields=fields, cap=max_estimated_cost_usd,
                         request_openai_key=request_openai_key, tier=tier)
    resolved, estimate = checked.key, checked.estimate
    job = IndexJob(
        model=checked.model, llm_backend=checked.backend.name, openai_key_source=resolved.source,
        openai_key_fingerprint=resolved.fingerprint,
        api_key_id=caller.api_key_id if caller else None, api_key_label=caller.label if caller else "",
        owner=owner or caller.fingerprint, idempotency_key=idempotency_key, fields=list(fields), source=source[:500],
        total=len(records), estimated_cost_usd=estimate, max_estimated_cost_usd=max_estimated_cost_usd,
        mode=mode, fallback="" if fallback == "none" else fallback, service_tier=service_tier,
    )
    with transaction.atomic():
        job.save(force_insert=True)
        Record.objects.bulk_create(
            (Record(job=job, position=i, record_id=r["id"], title=_storable(r.get("title") or ""),
                    abstract=None if r.get("abstract") is None else _storable(r["abstract"]))
             for i, r in enumerate(records)),
            batch_size=RECORD_INSERT_BATCH,
        )
        if resolved.source == SOURCE_REQUEST:
            lifecycle.store_request_key(job, resolved.key)
        if enqueue:
            lifecycle.enqueue(job)
    return job


def job_resubmit(*, job: IndexJob) -> IndexJob:
    """A new job from the stored inputs and records, for the same caller (operators' admin action).

    Raises what `job_create` raises, and `ValidationError` for a job that ran
    on a per-request OpenAI key (that key is not kept).
    """
    from crystallise.jobs.resubmit import check_resubmittable, original_caller

    check_resubmittable(job)
    rows = job.records.order_by("position").values_list("record_id", "title", "abstract")
    records = [{"id": rid, "title": title, "abstract": abstract} for rid, title, abstract in rows.iterator(chunk_size=2000)]
    return job_create(
        caller=original_caller(job), model=job.model, records=records, fields=list(job.fields),
        max_estimated_cost_usd=job.max_estimated_cost_usd, source=job.source,
        mode=job.mode, fallback=job.fallback or "none", service_tier=job.service_tier,
    )


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL; cleaning drops control characters anyway, so the precheck is unchanged.
    return text.replace("\x00", "")


def job_delete(*, job: IndexJob) -> None:
    """Delete a finished job and its results (set-based: no per-row cascade)."""
    with transaction.atomic():
        IndexResult.objects.filter(job=job)._raw_delete(IndexResult.objects.db)
        Record.objects.filter(job=job)._raw_delete(Record.objects.db)
        job.delete()


def job_run(*, job_id, concurrency: int | None = None, on_outcome=None) -> str | None:
    return run_job(IndexKind(on_outcome=on_outcome), job_id, concurrency=concurrency)


class IndexKind(OnlineKind):
    """How the shared runner indexes records."""

    job_model = IndexJob

    def __init__(self, on_outcome=None) -> None:
        # Called in the event loop after each record (the CLI's progress bar).
        self.on_outcome = on_outcome

    def prepare(self, job: IndexJob) -> None:
        if job.attempts > 1:
            recount(job)
        self.options = call_options(model=job.model, fields=job.fields, cache_key=f"crystallise-indexer-{job.pk}")
        self.options.service_tier = "flex" if job.service_tier == "flex" else None

    def pending_items(self, job: IndexJob, after: int, limit: int):
        return list(
            Record.objects.filter(job=job, position__gt=after, result__isnull=True)
            .order_by("position")
            .only("id", "position", "record_id", "title", "abstract")[:limit]
        )

    def item_position(self, item: Record) -> int:
        return item.position

    def items_at(self, job: IndexJob, positions: list[int]):
        """The records at `positions` that have no result yet (the batch lane's collecting)."""
        return list(Record.objects.filter(job=job, position__in=positions, result__isnull=True)
                    .only("id", "position", "record_id", "title", "abstract"))

    def request(self, job: IndexJob, record: Record) -> tuple[list[dict], CallOptions] | Outcome:
        """The call that indexes `record`, or its outcome when the precheck decides it without one."""
        status, error, cleaned = precheck(record.abstract)
        if status != Status.OK:
            return self._outcome(job, record, Indexed(status, error, backend=job.llm_backend))
        return prompts.messages_for(record.title, cleaned), self.options

    def outcome(self, job: IndexJob, record: Record, answer: LLMResult | LLMError) -> Outcome:
        """The record's result from the provider's answer, or from the error that stands instead of one."""
        if isinstance(answer, LLMError):
            indexed = Indexed(Status.LLM_ERROR, answer.detail, category=answer.category,
                              usage=getattr(answer, "usage", None) or Usage(), backend=job.llm_backend)
        else:
            indexed = Indexed(Status.OK, fields=answer.parsed.model_dump(), usage=answer.usage, backend=answer.backend)
        return self._outcome(job, record, indexed, tier=getattr(answer, "tier", None))

    def _outcome(self, job: IndexJob, record: Record, indexed: Indexed, tier: str | None = None) -> Outcome:
        usage = indexed.usage or Usage()
        row = IndexResult(
            job_id=job.pk, record_id=record.pk, position=record.position, indexing_status=indexed.status,
            extraction_error=indexed.error, fields=indexed.fields, error_category=indexed.category,
            llm_backend=indexed.backend, input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens, output_tokens=usage.output_tokens,
        )
        ok = indexed.status == Status.OK
        outcome = Outcome(row=row, usage=usage, counters={"processed": 1, "ok": int(ok), "errored": int(not ok)},
                          error_category=indexed.category, error_message=indexed.error if indexed.category else None,
                          fatal=indexed.category == Category.AUTH, tier=tier)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def write(self, job: IndexJob, outcomes: list[Outcome]) -> None:
        IndexResult.objects.bulk_create([o.row for o in outcomes])

    def failure_counts(self, job: IndexJob) -> tuple[int, Counter]:
        attempted = IndexResult.objects.filter(job=job, indexing_status__in=(Status.OK, Status.LLM_ERROR)).count()
        failures = Counter(
            IndexResult.objects.filter(job=job, error_category__in=(Category.UPSTREAM, Category.RATE_LIMIT))
            .values_list("error_category", flat=True)
        )
        return attempted, failures


def job_reopen(*, job: IndexJob) -> IndexJob:
    """Make an interrupted or failed job runnable again (the CLI's rerun).

    Records that got `llm_error` are retried (their results are removed);
    records indexed or prechecked keep their results and are not billed again.
    """
    with transaction.atomic():
        IndexResult.objects.filter(job=job, indexing_status=Status.LLM_ERROR).delete()
        return lifecycle.reopen(job=job, complete=recount(job) >= job.total)


def recount(job: IndexJob) -> int:
    """Rebuild the job's counters from its persisted results (they are the truth); returns `processed`."""
    counts = IndexResult.objects.filter(job=job).aggregate(
        processed=Count("id"), ok=Count("id", filter=Q(indexing_status=Status.OK)))
    IndexJob.objects.filter(pk=job.pk).update(processed=counts["processed"], ok=counts["ok"],
                                              errored=counts["processed"] - counts["ok"])
    return counts["processed"]


def _content_key(record_id: str, title: str, abstract: str | None) -> tuple[str, str]:
    text = f"{title}\x00{'' if abstract is None else abstract}\x00{abstract is None}"
    return record_id, hashlib.sha256(text.encode()).hexdigest()


def carry_over(job: IndexJob, *, owner: str) -> int:
    """Give `job`'s records the results they already have in earlier jobs of `owner` (the CLI's rerun of a changed file).

    A record matches an earlier one with the same id, title and abstract, in a job with the same
    model, backend and fields; the newest such result wins. `llm_error` results are not carried
    (those records are retried). Carried results keep their status and fields with zero tokens:
    they were billed to the job that made them. Returns how many records were carried over.
    """
    earlier = {pk: created for pk, fields, created in IndexJob.objects.filter(
        owner=owner, model=job.model, llm_backend=job.llm_backend).exclude(pk=job.pk)
        .values_list("pk", "fields", "created_at") if fields == job.fields}
    if not earlier:
        return 0
    pending = {
        _content_key(rid, title, abstract): (pk, position)
        for pk, position, rid, title, abstract in Record.objects.filter(job=job)
        .values_list("pk", "position", "record_id", "title", "abstract").iterator(chunk_size=2000)
    }
    found: dict[tuple[str, str], tuple] = {}
    previous = (IndexResult.objects.filter(job_id__in=list(earlier)).exclude(indexing_status=Status.LLM_ERROR)
                .values_list("job_id", "record__record_id", "record__title", "record__abstract", "indexing_status",
                             "extraction_error", "fields", "error_category", "llm_backend"))
    for job_id, rid, title, abstract, *result in previous.iterator(chunk_size=2000):
        key = _content_key(rid, title, abstract)
        if key in pending and (key not in found or earlier[job_id] > earlier[found[key][0]]):
            found[key] = (job_id, *result)
    rows = []
    for key, (_, status, error, fields, category, backend) in found.items():
        record_pk, position = pending[key]
        rows.append(IndexResult(job=job, record_id=record_pk, position=position, indexing_status=status,
                                extraction_error=error, fields=fields, error_category=category, llm_backend=backend))
    with transaction.atomic():
        IndexResult.objects.bulk_create(rows, batch_size=RECORD_INSERT_BATCH)
        recount(job)
    return len(rows)

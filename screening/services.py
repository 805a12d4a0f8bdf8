"""Screening workflows: create (validate, estimate, store, enqueue), run, delete, and the completion callback."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from crystallise.auth import Caller
from crystallise.config import model_capabilities, validate_lane
from crystallise.errors import Category, ConflictError, LLMError, ValidationError
from crystallise.jobs import lifecycle
from crystallise.jobs.runner import OnlineKind, Outcome, run_job
from crystallise.keyvault import SOURCE_REQUEST
from crystallise.llm.base import CallOptions, LLMResult
from crystallise.preflight import preflight
from crystallise.tokens import count_message_tokens, estimate_cost_usd
from screening import prompts
from screening.clustering import cluster_papers, single_cluster
from screening.models import CallbackStatus, Paper, ScreeningJob, ScreeningResult
from screening.scoring import decide, needs_review, score_verdicts
from screening.second_opinion import SecondOpinion, add_usage_by_model

PAPER_INSERT_BATCH = 2000


def output_budget(n_criteria: int) -> int:
    """Max output tokens per paper: terse verdicts plus room for minimal reasoning."""
    return 160 + 48 * n_criteria


def estimate_job_cost(*, model: str, criteria: dict, papers: list[dict], tier: str = "default") -> Decimal:
    """Estimated USD: real token counts of every prompt plus the output budget."""
    system = prompts.system_prompt(criteria)
    fixed = count_message_tokens([{"role": "system", "content": system}, {"role": "user", "content": ""}])
    texts = [prompts.paper_prompt(p.get("title") or "", p.get("abstract") or "", p.get("keywords")) for p in papers]
    from crystallise.tokens import get_encoding

    variable = sum(len(t) for t in get_encoding().encode_ordinary_batch(texts)) if texts else 0
    input_tokens = fixed * len(papers) + variable
    n_criteria = len(prompts.criterion_ids(criteria))
    output_tokens = output_budget(n_criteria) * len(papers)
    return estimate_cost_usd(model, input_tokens=input_tokens, output_tokens=output_tokens, tier=tier)


def request_fingerprint(payload: dict, papers: list[dict]) -> str:
    blob = json.dumps({"payload": payload, "papers": papers}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def job_create(
    *,
    caller: Caller,
    criteria: dict,
    papers: list[dict],
    model: str | None = None,
    project_id: str | None = None,
    threshold: float = 1.0,
    clusters: dict | None = None,
    max_estimated_cost_usd: Decimal | None = None,
    callback_url: str | None = None,
    second_opinion: dict | None = None,
    mode: str = "online",
    fallback: str = "none",
    service_tier: str = "default",
    request_openai_key: str | None = None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
) -> tuple[ScreeningJob, bool]:
    """Check (preflight), estimate and store a screening job, then enqueue it. Returns (job, created).

    The arguments are the API's validated fields (`ScreeningJobCreateSerializer`).
    """
    inputs = {"model": model, "project_id": project_id, "criteria": criteria, "threshold": threshold,
              "clusters": clusters, "max_estimated_cost_usd": max_estimated_cost_usd, "callback_url": callback_url,
              "second_opinion": second_opinion}
    lane = {"mode": mode, "fallback": fallback, "service_tier": service_tier}
    # Only a non-default lane is part of the fingerprint: earlier requests keep theirs.
    inputs.update({k: v for k, v in lane.items() if v not in ("online", "none", "default")})
    tier = validate_lane(model=model, mode=mode, service_tier=service_tier, fallback=fallback)
    if mode == "batch" and second_opinion:
        raise ValidationError("second_opinion is not available in the batch lane (it asks a second model after "
                              "the first answer). Use mode 'online'.",
                              errors={"second_opinion": ["Not available with mode 'batch'."]})
    fingerprint = request_fingerprint({k: v for k, v in inputs.items() if v is not None}, papers)

    def replay() -> ScreeningJob | None:
        if not idempotency_key:
            return None
        existing = ScreeningJob.objects.filter(owner=caller.fingerprint, idempotency_key=idempotency_key).first()
        return None if existing is None else _replay(existing, fingerprint)

    checked = preflight(
        caller=caller, model=model, request_openai_key=request_openai_key, cap=max_estimated_cost_usd,
        estimate=lambda m: sum(estimate_job_cost(model=name, criteria=criteria, papers=papers, tier=tier)
                               # the second model's worst case: it is asked about every paper
                               for name in (m, *([second_opinion["model"]] if second_opinion else []))),
        replay=replay,
        advice="Raise the cap, screen fewer papers, or pick a cheaper model.",
    )
    if checked.replayed is not None:
        return checked.replayed, False
    job = ScreeningJob(
        model=checked.model,
        project_id=project_id or None,
        llm_backend=checked.backend.name,
        openai_key_source=checked.key.source,
        openai_key_fingerprint=checked.key.fingerprint,
        api_key_id=caller.api_key_id,
        api_key_label=caller.label,
        owner=caller.fingerprint,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint,
        criteria=criteria,
        threshold=threshold,
        clusters_config={"by": "none", "count": None, "include": None, **(clusters or {})},
        total=len(papers),
        estimated_cost_usd=checked.estimate,
        max_estimated_cost_usd=max_estimated_cost_usd,
        callback_url=callback_url or None,
        second_opinion=second_opinion or None,
        mode=mode,
        fallback="" if fallback == "none" else fallback,
        service_tier=service_tier,
    )
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            Paper.objects.bulk_create(
                (
                    Paper(
                        job=job, position=i, paper_id=p["id"], title=p.get("title") or "",
                        abstract=p.get("abstract") or "", keywords=p.get("keywords") or [],
                        year=p.get("year"), doi=p.get("doi"),
                    )
                    for i, p in enumerate(papers)
                ),
                batch_size=PAPER_INSERT_BATCH,
            )
            if checked.key.source == SOURCE_REQUEST:
                lifecycle.store_request_key(job, checked.key.key)
            if enqueue:
                lifecycle.enqueue(job)
    except IntegrityError:
        return _resolve_conflict(job, caller, idempotency_key, fingerprint), False
    return job, True


def _replay(existing: ScreeningJob, fingerprint: str) -> ScreeningJob:
    if existing.request_hash != fingerprint:
        raise ConflictError(
            "This Idempotency-Key was already used with a different request body. Use a new key for a new job.",
            extra={"job_id": str(existing.pk)},
        )
    return existing


def _resolve_conflict(job: ScreeningJob, caller: Caller, idempotency_key: str | None, fingerprint: str) -> ScreeningJob:
    if idempotency_key:
        existing = ScreeningJob.objects.filter(owner=caller.fingerprint, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, fingerprint)
    active = ScreeningJob.objects.active_for(owner=caller.fingerprint, project_id=job.project_id).first() if job.project_id else None
    active_id = str(active.pk) if active else None
    raise ConflictError(
        f"Project {job.project_id!r} already has an active screening job ({active_id}). "
        "Wait for it to finish, cancel it with DELETE, or submit without project_id.",
        extra={"active_job_id": active_id},
    )


def job_delete(*, job: ScreeningJob) -> None:
    """Delete a finished job and its results (set-based: no per-row cascade).

    The job row is locked first: a review call recording at that moment (it locks the row too)
    commits before, and its reviews are deleted with the job, or finds the job gone (404).
    """
    with transaction.atomic():
        ScreeningJob.objects.select_for_update().filter(pk=job.pk).exists()
        ScreeningResult.objects.filter(job=job)._raw_delete(ScreeningResult.objects.db)
        Paper.objects.filter(job=job)._raw_delete(Paper.objects.db)
        job.delete()


def job_run(*, job_id, concurrency: int | None = None) -> str | None:
    return run_job(ScreeningKind(), job_id, concurrency=concurrency)


def callback_enqueue(job_id) -> None:
    """Queue the completion callback of a job that asked for one: the end hook of every screening job
    (completed, failed, cancelled or never enqueued; registered in `ScreeningConfig.ready`)."""
    if ScreeningJob.objects.filter(pk=job_id, callback_url__isnull=False).exists():
        from django_q.tasks import async_task

        ScreeningJob.objects.filter(pk=job_id).update(callback_status=CallbackStatus.PENDING, callback_error=None)
        async_task("screening.tasks.deliver_screening_callback", str(job_id))


def callback_deliver(*, job_id) -> str | None:
    from crystallise import callbacks

    job = ScreeningJob.objects.filter(pk=job_id).first()
    if job is None or not job.callback_url:
        return None
    payload = {
        "id": str(job.pk), "status": job.status, "project_id": job.project_id,
        "progress": {"total": job.total, "screened": job.screened, "included": job.included,
                     "excluded": job.excluded, "errored": job.errored},
        "error_category": job.error_category, "error_message": job.error_message,
        "usage": job.usage_dict(), "cost_usd": float(job.cost_usd), "finished_at": job.finished_at,
    }
    delivered, attempts, error = callbacks.deliver(job.callback_url, payload)
    status = CallbackStatus.DELIVERED if delivered else CallbackStatus.FAILED
    ScreeningJob.objects.filter(pk=job.pk).update(callback_status=status, callback_attempts=attempts,
                                                  callback_error=error)
    return status.value


class ScreeningKind(OnlineKind):
    """How the shared runner screens papers."""

    job_model = ScreeningJob

    def prepare(self, job: ScreeningJob) -> None:
        if job.cluster_assignments is None:
            config = job.clusters_config or {}
            by = config.get("by") or "none"
            if by == "none":
                result = single_cluster(job.total)
            else:
                rows = Paper.objects.filter(job=job).order_by("position").values("title", "abstract", "keywords")
                result = cluster_papers(rows.iterator(chunk_size=2000), by=by, count=config.get("count"))
            job.clusters = [{**c, "screened": 0, "included": 0} for c in result.clusters]
            job.cluster_assignments = result.assignments
            ScreeningJob.objects.filter(pk=job.pk).update(clusters=job.clusters, cluster_assignments=job.cluster_assignments)
        if job.attempts > 1:
            self.recount(job)
        include = (job.clusters_config or {}).get("include")
        wanted = {str(label).casefold() for label in include} if include else None
        self.kept = {c["id"] for c in job.clusters if wanted is None or c["label"].casefold() in wanted}
        self.label = {c["id"]: c["label"] for c in job.clusters}
        self.system = prompts.system_prompt(job.criteria)
        # For the methods report: what was sent with every paper, and the model the provider says it ran.
        self.run_facts = {"prompt_sha256": hashlib.sha256(self.system.encode()).hexdigest(),
                          "provider_model": job.provider_model}
        self.ids = prompts.criterion_ids(job.criteria)
        self.options = CallOptions(
            model=job.model,
            schema=prompts.decision_schema(tuple(cid for cid, *_ in self.ids)),
            max_output_tokens=output_budget(len(self.ids)),
            reasoning_effort="minimal" if model_capabilities[job.model].reasoning else None,
            cache_key=f"crystallise-screening-{job.pk}",
            service_tier="flex" if job.service_tier == "flex" else None,
        )
        self.second = SecondOpinion.for_job(job, self.options)

    def recount(self, job: ScreeningJob) -> None:
        """On resume, rebuild every counter from the persisted results (they are the truth)."""
        results = ScreeningResult.objects.filter(job=job)
        totals = results.aggregate(
            screened=Count("id"),
            included=Count("id", filter=Q(decision="include")),
            excluded=Count("id", filter=Q(decision="exclude")),
            errored=Count("id", filter=Q(decision__isnull=True)),
        )
        per_cluster = {
            row["cluster"]: row
            for row in results.values("cluster").annotate(n=Count("id"), inc=Count("id", filter=Q(decision="include")))
        }
        for entry in job.clusters:
            row = per_cluster.get(entry["id"], {})
            entry["screened"], entry["included"] = row.get("n", 0), row.get("inc", 0)
        ScreeningJob.objects.filter(pk=job.pk).update(clusters=job.clusters, **totals)

    def pending_items(self, job: ScreeningJob, after: int, limit: int):
        return list(
            Paper.objects.filter(job=job, position__gt=after, result__isnull=True)
            .order_by("position")
            .only("id", "position", "paper_id", "title", "abstract", "keywords")[:limit]
        )

    def item_position(self, item: Paper) -> int:
        return item.position

    def items_at(self, job: ScreeningJob, positions: list[int]):
        """The papers at `positions` that have no result yet (the batch lane's collecting)."""
        return list(Paper.objects.filter(job=job, position__in=positions, result__isnull=True)
                    .only("id", "position", "paper_id", "title", "abstract", "keywords"))

    def _row(self, job: ScreeningJob, paper: Paper) -> ScreeningResult:
        return ScreeningResult(job_id=job.pk, paper_id=paper.pk, position=paper.position,
                               cluster=job.cluster_assignments[paper.position], llm_backend=job.llm_backend)

    def request(self, job: ScreeningJob, paper: Paper) -> tuple[list[dict], CallOptions] | Outcome:
        """The call that screens `paper`, or its outcome when it is decided without one (a cluster left out)."""
        cluster = job.cluster_assignments[paper.position]
        if cluster not in self.kept:
            row = self._row(job, paper)
            row.decision, row.filtered, row.criteria = "exclude", True, []
            row.reasoning = f"Excluded without screening: cluster '{self.label[cluster]}' is not in clusters.include."
            return Outcome(row=row, counters={"screened": 1, "excluded": 1})
        return prompts.messages_for(self.system, paper.title, paper.abstract, paper.keywords), self.options

    def outcome(self, job: ScreeningJob, paper: Paper, answer: LLMResult | LLMError) -> Outcome:
        """The paper's result from the provider's answer, or from the error that stands instead of one."""
        row = self._row(job, paper)
        if isinstance(answer, LLMError):
            usage = getattr(answer, "usage", None)
            row.error, row.error_category = answer.detail, answer.category
            outcome = Outcome(row=row, counters={"screened": 1, "errored": 1}, error_category=answer.category,
                              error_message=answer.detail, fatal=answer.category == Category.AUTH)
            if usage is not None:
                outcome.usage = usage
            return outcome
        self.fill(row, answer.parsed, job)
        row.llm_backend = answer.backend
        self.run_facts["provider_model"] = (getattr(answer, "model", None) or self.run_facts["provider_model"])[:200]
        row.input_tokens, row.cached_input_tokens, row.output_tokens = (
            answer.usage.input_tokens, answer.usage.cached_input_tokens, answer.usage.output_tokens)
        included = row.decision == "include"
        return Outcome(row=row, usage=answer.usage, tier=getattr(answer, "tier", None),
                       counters={"screened": 1, "included": int(included), "excluded": int(not included)})

    async def follow_up(self, client, job: ScreeningJob, messages: list[dict], outcome: Outcome) -> Outcome:
        if self.second is None:
            return outcome
        return await self.second.review(self, client, job, messages, outcome)

    def fill(self, row: ScreeningResult, decision, job: ScreeningJob) -> None:
        given = {cid: getattr(decision.verdicts, cid) for cid, *_ in self.ids}
        verdicts = {cid: answer.verdict for cid, answer in given.items()}
        row.criteria = [
            {"kind": kind, "index": index, "text": text, "verdict": verdicts[cid], "reasoning": given[cid].reason}
            for cid, kind, index, text in self.ids
        ]
        row.score = round(score_verdicts(verdicts, job.criteria), 4)
        row.decision = decide(row.score, job.threshold)
        row.confidence = min(1.0, max(0.0, float(decision.confidence)))
        row.needs_review = needs_review(verdicts, row.confidence)
        row.reasoning = decision.reasoning

    def write(self, job: ScreeningJob, outcomes: list[Outcome]) -> None:
        ScreeningResult.objects.bulk_create([o.row for o in outcomes])
        if job.second_opinion:
            # The job row is locked by the runner's UPDATE in this transaction: a safe read-modify-write.
            current = ScreeningJob.objects.values_list("usage_by_model", flat=True).get(pk=job.pk)
            ScreeningJob.objects.filter(pk=job.pk).update(usage_by_model=add_usage_by_model(current, job, outcomes))
        by_cluster = Counter()
        included = Counter()
        for outcome in outcomes:
            by_cluster[outcome.row.cluster] += 1
            included[outcome.row.cluster] += outcome.row.decision == "include"
        for entry in job.clusters:
            entry["screened"] += by_cluster.get(entry["id"], 0)
            entry["included"] += included.get(entry["id"], 0)
        ScreeningJob.objects.filter(pk=job.pk).update(clusters=job.clusters, **self.run_facts)

    def failure_counts(self, job: ScreeningJob) -> tuple[int, Counter]:
        attempted = ScreeningResult.objects.filter(job=job, filtered=False).count()
        failures = Counter(
            ScreeningResult.objects.filter(job=job, error_category__in=(Category.UPSTREAM, Category.RATE_LIMIT))
            .values_list("error_category", flat=True)
        )
        return attempted, failures


def job_resubmit(*, job: ScreeningJob) -> ScreeningJob:
    """A new job from the stored inputs and papers (operators' admin action), for the same caller.

    The inputs go through the API's own validation again (a job stored before a rule existed is
    refused with the rule's message) and then `job_create` (estimate, budgets, enqueue). Raises the
    service's errors, and `ValidationError` for jobs that ran on a per-request OpenAI key.
    """
    from crystallise.jobs.resubmit import check_resubmittable, original_caller
    from crystallise.serializers import validated
    from screening.serializers import ScreeningJobCreateSerializer

    check_resubmittable(job)
    rows = job.papers.order_by("position").values_list("paper_id", "title", "abstract", "keywords", "year", "doi")
    papers = [
        {"id": pid, "title": title, "abstract": abstract, "keywords": keywords or [], "year": year, "doi": doi}
        for pid, title, abstract, keywords, year, doi in rows.iterator(chunk_size=2000)
    ]
    data = {
        "model": job.model, "project_id": job.project_id, "criteria": job.criteria, "threshold": job.threshold,
        "clusters": job.clusters_config, "max_estimated_cost_usd": job.max_estimated_cost_usd,
        "callback_url": job.callback_url, "papers": papers,
        "mode": job.mode, "fallback": job.fallback or "none", "service_tier": job.service_tier,
    }
    new_job, _ = job_create(caller=original_caller(job), **validated(ScreeningJobCreateSerializer(data=data)))
    return new_job

"""Validation samples: draw a uniform random sample of a job's papers, follow its human review, and certify
recall from it once every sampled paper has a human decision (formulas in docs/evaluation.md)."""

from __future__ import annotations

import math
import secrets

import numpy as np
from django.db import transaction
from django.db.models import Count, QuerySet

from crystallise.auth import Caller
from crystallise.errors import ConflictError, ValidationError
from crystallise.jobs.models import JobStatus
from screening.evaluation import stats
from screening.evaluation.metrics import job_counts, job_scores
from screening.models import (
    SamplePopulation,
    ScreeningJob,
    ScreeningResult,
    ValidationSample,
    ValidationSampleItem,
)

MAX_SAMPLE = 10_000
MAX_SEED = 2**63 - 1
ITEM_BATCH = 2000


def population(job: ScreeningJob, which: str) -> QuerySet:
    """`excluded`: the papers the model excluded (cluster-filtered ones too); `all`: every paper with a model decision."""
    results = ScreeningResult.objects.filter(job=job)
    if which == SamplePopulation.EXCLUDED:
        return results.filter(decision="exclude")
    return results.filter(decision__isnull=False)


def sample_draw(*, job: ScreeningJob, caller: Caller, size: int, which: str,
                seed: int | None = None) -> tuple[ValidationSample, list[str]]:
    """Draw and store a uniform random sample (without replacement) of `size` papers. Returns it and its paper ids.

    The population is ordered by input position and the draw is numpy's PCG64 generator seeded with
    `seed` (random when not given), so the same seed on the same job draws the same papers.
    """
    if job.status != JobStatus.COMPLETED:
        raise ConflictError(f"The job is {job.status}: validation samples are drawn from a completed job, "
                            "whose decisions are final.")
    rows = list(population(job, which).order_by("position").values_list("id", "paper__paper_id"))
    if not rows:
        raise ValidationError(f"The job has no {which} papers to sample.",
                              errors={"from": [f"No {which} papers in this job."]})
    if size > len(rows):
        raise ValidationError(f"size {size} is larger than the population ({len(rows)} {which} papers).",
                              errors={"size": [f"At most {len(rows)} (the {which} papers of this job)."]})
    seed = secrets.randbits(32) if seed is None else seed
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), size=size, replace=False))
    with transaction.atomic():
        sample = ValidationSample.objects.create(
            job=job, population=which, size=size, seed=seed, population_size=len(rows), threshold=job.threshold,
            api_key_id=caller.api_key_id, api_key_label=caller.label)
        ValidationSampleItem.objects.bulk_create(
            (ValidationSampleItem(sample=sample, result_id=rows[i][0]) for i in picked), batch_size=ITEM_BATCH)
    return sample, [rows[i][1] for i in picked]


def _items(sample: ValidationSample) -> list[tuple]:
    """(paper_id, score, model decision, human decision, conflict or None when unreviewed), in input order."""
    return list(sample.items.order_by("result__position").values_list(
        "result__paper__paper_id", "result__score", "result__decision", "result__review__human_decision",
        "result__review__conflict"))


def _human_included_scores(job: ScreeningJob) -> dict:
    rows = (ScreeningResult.objects.filter(job=job, review__human_decision="include")
            .values("score").annotate(n=Count("id")).order_by())
    return {row["score"]: row["n"] for row in rows}


def _at_or_above(counts: dict, threshold: float) -> int:
    return sum(n for score, n in counts.items() if score is not None and score >= threshold)


def _below(score: float | None, threshold: float) -> bool:
    return score is None or score < threshold


def _elusion(sample, items, job, confidence) -> tuple[dict, list[tuple[float, float | None]]]:
    found = sum(1 for item in items if item[3] == "include")
    counts = job_counts(job)
    confirmed = counts["confirmed_includes"]
    excluded, sampled = sample.population_size, sample.size
    missed_upper, recall_lower = stats.elusion_recall_bound(
        confirmed=confirmed, excluded=excluded, found=found, sampled=sampled, confidence=confidence)
    missed = excluded * found / sampled
    figures = {
        "method": "elusion",
        "sampled": sampled,
        "found_includes": found,
        "excluded": excluded,
        "elusion": stats.proportion(found, sampled, confidence),
        "elusion_upper_bound": stats.upper_bound(found, sampled, confidence),
        "missed_includes_estimate": missed,
        "missed_includes_upper_bound": missed_upper,
        "confirmed_includes": confirmed,
        "model_included": counts["model_included"],
        "model_included_unreviewed": counts["unreviewed_included"],
        "recall_estimate": confirmed / (confirmed + missed) if confirmed + missed > 0 else None,
        "recall_lower_bound": recall_lower,
    }
    # Thresholds up to the job's own: lowering it moves excluded papers (sampled or not) to the included side.
    scores, included = job_scores(job), _human_included_scores(job)
    candidates = sorted({s for s in scores if s is not None and s <= job.threshold} | {job.threshold})
    steps = []
    for t in candidates:
        below = [item for item in items if _below(item[1], t)]
        _, bound = stats.elusion_recall_bound(
            confirmed=_at_or_above(included, t), excluded=sum(n for s, n in scores.items() if _below(s, t)),
            found=sum(1 for item in below if item[3] == "include"), sampled=len(below), confidence=confidence)
        steps.append((t, bound))
    return figures, steps


def _recall(sample, items, job, confidence) -> tuple[dict, list[tuple[float, float | None]]]:
    positives = [item for item in items if item[3] == "include"]
    found = sum(1 for item in positives if item[2] == "include")
    figures = {
        "method": "recall",
        "sampled": sample.size,
        "human_included": len(positives),
        "found_by_model": found,
        "prevalence": stats.proportion(len(positives), sample.size, confidence),
        "recall": stats.proportion(found, len(positives), confidence),
        "recall_lower_bound": stats.lower_bound(found, len(positives), confidence) if positives else None,
    }
    thresholds = sorted(s for s in job_scores(job) if s is not None)
    steps = [(t, stats.lower_bound(sum(1 for item in positives if not _below(item[1], t)), len(positives), confidence)
              if positives else None) for t in thresholds]
    return figures, steps


def sample_status(sample: ValidationSample, *, target_recall: float, confidence: float) -> dict:
    """A sample's review progress and, once every sampled paper has a non-conflicting human decision, its figures."""
    job = sample.job
    items = _items(sample)
    decided = sum(1 for item in items if item[3] is not None)
    body = {
        "id": str(sample.pk), "job_id": str(job.pk), "from": sample.population, "size": sample.size,
        "seed": sample.seed, "population_size": sample.population_size, "threshold": sample.threshold,
        "created_at": sample.created_at, "target_recall": target_recall, "confidence": confidence,
        "paper_ids": [item[0] for item in items],
        "progress": {"reviewed": sum(1 for item in items if item[4] is not None), "decided": decided,
                     "conflicts": sum(1 for item in items if item[4]), "remaining": sample.size - decided},
        "complete": decided == sample.size,
        "pending_paper_ids": [item[0] for item in items if item[3] is None],
        "figures": None, "certified": None, "recommended_threshold": None,
    }
    if not body["complete"]:
        return body
    measure = _elusion if sample.population == SamplePopulation.EXCLUDED else _recall
    figures, steps = measure(sample, items, job, confidence)
    recommended, tested = stats.fixed_sequence(steps, target_recall)
    bound = figures["recall_lower_bound"]
    body.update(figures=figures, certified=bound is not None and bound >= target_recall,
                recommended_threshold={"threshold": recommended, "tested": tested})
    return body


def plan(job: ScreeningJob, *, target_recall: float, confidence: float) -> dict:
    """How large a validation sample must be to certify `target_recall` (if it finds no missed include)."""
    counts = job_counts(job)
    excluded, included, confirmed = counts["model_excluded"], counts["model_included"], counts["confirmed_includes"]
    positives = stats.positives_needed(target_recall=target_recall, confidence=confidence)
    if counts["human_decided"]:
        prevalence, source = counts["human_included"] / counts["human_decided"], "human decisions so far"
    else:
        decided = excluded + included
        prevalence, source = (included / decided if decided else 0.0), "model decisions"
    return {
        "job_id": str(job.pk), "target_recall": target_recall, "confidence": confidence,
        "excluded": excluded, "model_included": included, "confirmed_includes": confirmed,
        "excluded_sample": {
            "size_if_all_included_confirmed": stats.elusion_sample_size(
                excluded=excluded, confirmed=included, target_recall=target_recall, confidence=confidence),
            "size_with_confirmed_so_far": stats.elusion_sample_size(
                excluded=excluded, confirmed=confirmed, target_recall=target_recall, confidence=confidence),
        },
        "all_sample": {
            "positives_needed": positives,
            "estimated_size": math.ceil(positives / prevalence) if positives and prevalence > 0 else None,
            "prevalence": prevalence, "prevalence_from": source,
        },
        "note": ("Sizes certify the target only if the sample finds no include the model excluded (elusion) "
                 "or the model finds every sampled include (all). A size above the population means reviewing "
                 "all of it instead. The elusion bound uses the includes humans have confirmed when the sample "
                 "completes: the first size assumes all model-included papers will be confirmed."),
    }

"""A job's decisions against its papers' human decisions (GET .../evaluation).

Everything is computed from grouped counts: the database returns one row per
(score, model decision, needs_review, human decision) combination, a handful
of rows whatever the job's size, and the figures come from cumulative sums
over them. Only the criteria of papers the model wrongly excluded are read
row by row (one pass), to say which criterion knocked each out.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, F, Q

from screening import prompts
from screening.evaluation import policies, stats
from screening.models import ScreeningJob, ScreeningResult

WSS_RECALL = 0.95

SAMPLE_NOTE = (
    "These figures describe the {n} papers with a human decision, and only them. Unless those papers are "
    "a uniform random sample of the job (a validation sample drawn with from=all), they are not a random "
    "sample: if reviewers chose what to check (for example only the flagged or the included papers), the "
    "figures do not carry over to the job's other papers. Use a validation sample to certify recall."
)


@dataclass(frozen=True)
class Group:
    """Papers sharing a score, model decision, flag and human decision."""

    score: float | None
    decision: str | None
    needs_review: bool
    human: str
    n: int

    def included_at(self, threshold: float) -> bool:
        # A paper the cluster filter excluded has no score: excluded at every threshold.
        return self.score is not None and self.score >= threshold


def job_counts(job: ScreeningJob) -> dict:
    """Where the job's papers stand, model and humans (one query)."""
    counts = ScreeningResult.objects.filter(job=job).aggregate(
        screened=Count("id"),
        model_included=Count("id", filter=Q(decision="include")),
        model_excluded=Count("id", filter=Q(decision="exclude")),
        errored=Count("id", filter=Q(decision__isnull=True)),
        needs_review=Count("id", filter=Q(needs_review=True)),
        reviewed=Count("review"),
        human_decided=Count("id", filter=Q(review__human_decision__isnull=False)),
        human_included=Count("id", filter=Q(review__human_decision="include")),
        conflicts=Count("id", filter=Q(review__conflict=True)),
        confirmed_includes=Count("id", filter=Q(decision="include", review__human_decision="include")),
        overturned_to_include=Count("id", filter=Q(decision="exclude", review__human_decision="include")),
        overturned_to_exclude=Count("id", filter=Q(decision="include", review__human_decision="exclude")),
        unreviewed_included=Count("id", filter=Q(decision="include", review__human_decision__isnull=True)),
    )
    return {"total": job.total, **counts}


def job_scores(job: ScreeningJob) -> dict[float | None, int]:
    """How many of the job's papers with a model decision have each score (None: filtered by cluster)."""
    rows = (ScreeningResult.objects.filter(job=job, decision__isnull=False)
            .values("score").annotate(n=Count("id")).order_by())
    return {row["score"]: row["n"] for row in rows}


def decided_groups(job: ScreeningJob) -> list[Group]:
    rows = (ScreeningResult.objects.filter(job=job, review__human_decision__isnull=False)
            .values("score", "decision", "needs_review", human=F("review__human_decision"))
            .annotate(n=Count("id")).order_by())
    return [Group(**row) for row in rows]


def confusion(groups: list[Group], included) -> dict:
    """tp, fp, fn, tn of `included(group)` against the human decisions."""
    out = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for g in groups:
        key = ("t" if included(g) == (g.human == "include") else "f") + ("p" if included(g) else "n")
        out[key] += g.n
    return out


def sweep(groups: list[Group], scores: dict, confidence: float) -> list[dict]:
    """Recall, specificity and share excluded at each distinct score taken as the threshold, lowest first."""
    positives = sum(g.n for g in groups if g.human == "include")
    negatives = sum(g.n for g in groups if g.human == "exclude")
    evaluated = positives + negatives
    job_decided = sum(scores.values())
    out = []
    for threshold in sorted({s for s in scores if s is not None} | {g.score for g in groups if g.score is not None}):
        m = confusion(groups, lambda g, t=threshold: g.included_at(t))
        job_excluded = sum(n for s, n in scores.items() if s is None or s < threshold)
        out.append({
            "threshold": threshold,
            "recall": m["tp"] / positives if positives else None,
            "recall_lower_bound": stats.lower_bound(m["tp"], positives, confidence) if positives else None,
            "specificity": m["tn"] / negatives if negatives else None,
            "excluded_share": (m["tn"] + m["fn"]) / evaluated if evaluated else None,
            "job_excluded_share": job_excluded / job_decided if job_decided else None,
            **m,
        })
    return out


def wss_at_95(points: list[dict]) -> dict | None:
    """Work saved over sampling at 95 % recall (Cohen 2006), at the most excluding threshold reaching it."""
    reaching = [p for p in points if p["recall"] is not None and p["recall"] >= WSS_RECALL]
    if not reaching:
        return None
    best = reaching[-1]
    return {"value": best["excluded_share"] - (1 - WSS_RECALL), "threshold": best["threshold"],
            "recall": best["recall"], "excluded_share": best["excluded_share"]}


def knocked_out(job: ScreeningJob) -> tuple[list[dict], int]:
    """Per criterion: human-included papers the model excluded on which its verdict went against inclusion
    (an inclusion criterion not met or unclear, an exclusion criterion met), and how many for that reason
    alone; and how many such papers the cluster filter excluded without verdicts."""
    ids = prompts.criterion_ids(job.criteria)
    counts = {(kind, index): [0, 0] for _, kind, index, _ in ids}
    filtered = 0
    rows = (ScreeningResult.objects.filter(job=job, decision="exclude", review__human_decision="include")
            .values_list("criteria", "filtered"))
    for criteria, was_filtered in rows.iterator(chunk_size=2000):
        if was_filtered:
            filtered += 1
            continue
        against = [(c["kind"], c["index"]) for c in criteria or []
                   if (c["kind"] == "inclusion" and c["verdict"] != "met")
                   or (c["kind"] == "exclusion" and c["verdict"] == "met")]
        for key in against:
            if key in counts:
                counts[key][0] += 1
                counts[key][1] += len(against) == 1
    out = [{"kind": kind, "index": index, "text": text, "knocked_out": counts[(kind, index)][0],
            "only_reason": counts[(kind, index)][1]} for _, kind, index, text in ids]
    return out, filtered


def evaluate(job: ScreeningJob, *, target_recall: float, confidence: float) -> dict:
    """The evaluation of a job's decisions against its papers' human decisions (see docs/evaluation.md)."""
    counts = job_counts(job)
    all_groups = decided_groups(job)
    groups = [g for g in all_groups if g.decision is not None]
    scores = job_scores(job)
    matrix = confusion(groups, lambda g: g.decision == "include")
    positives, negatives = matrix["tp"] + matrix["fn"], matrix["tn"] + matrix["fp"]
    evaluated = positives + negatives
    points = sweep(groups, scores, confidence)
    recommended, tested = stats.fixed_sequence(((p["threshold"], p["recall_lower_bound"]) for p in points),
                                               target_recall)
    flagged = sum(g.n for g in groups if g.needs_review)
    caught = sum(g.n for g in groups if g.human == "include" and (g.decision == "include" or g.needs_review))
    at_threshold = None
    if evaluated and positives:
        at_threshold = (matrix["tn"] + matrix["fn"]) / evaluated - (1 - matrix["tp"] / positives)
    criteria, filtered_misses = knocked_out(job)
    return {
        "job_id": str(job.pk),
        "threshold": job.threshold,
        "target_recall": target_recall,
        "confidence": confidence,
        "evaluated": evaluated,
        "sample_note": SAMPLE_NOTE.format(n=evaluated),
        "job": counts,
        "human_decided_without_model_decision": sum(g.n for g in all_groups if g.decision is None),
        "confusion_matrix": matrix,
        "recall": stats.proportion(matrix["tp"], positives, confidence),
        "specificity": stats.proportion(matrix["tn"], negatives, confidence),
        "precision": stats.proportion(matrix["tp"], matrix["tp"] + matrix["fp"], confidence),
        "wss_at_95": wss_at_95(points),
        "wss_at_threshold": at_threshold,
        "needs_review": {
            "flagged": flagged,
            "share": flagged / evaluated if evaluated else None,
            "job_share": counts["needs_review"] / counts["screened"] if counts["screened"] else None,
            "recall_if_checked": stats.proportion(caught, positives, confidence),
        },
        "threshold_sweep": points,
        "recommended_threshold": {
            "threshold": recommended,
            "method": "fixed-sequence: thresholds from the most inclusive upward, each tested at the full "
                      "confidence while all before it passed; the last that passed",
            "tested": tested,
        },
        "criteria": criteria,
        "missed_by_cluster_filter": filtered_misses,
        "policies": policies.replay(job, recommended=recommended, confidence=confidence),
    }

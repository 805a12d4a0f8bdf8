"""Policy replay: what each decision policy the stored opinions allow would have given on the reviewed papers.

No new calls: every figure comes from the opinions already stored on the
results (the job's model, and the second model's where it was asked) and the
humans' decisions. Policies:

- `first_model`: the job's model alone at the job's threshold;
- `second_model`: the second model alone, on the papers it answered (its subset only);
- `any_include` / `both_include`: the two opinions combined by that rule (the first alone where the second
  was not asked);
- `first_model_recommended_threshold`: the job's model at the threshold the evaluation recommends.

Each gives recall with its exact interval, specificity, the share of papers it leaves for humans (the
papers it includes: what reviewers still read), and its cost per 1,000 papers from the job's
`usage_by_model` (the second model's cost spread over the share of papers it was asked about).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from screening.evaluation import stats
from screening.models import ScreeningJob, ScreeningResult
from screening.second_opinion import decide

Paper = tuple[str, str | None, float | None, str]  # first decision, second decision, score, human decision


def _reviewed(job: ScreeningJob) -> list[Paper]:
    rows = (ScreeningResult.objects.filter(job=job, decision__isnull=False, review__human_decision__isnull=False)
            .values_list("decision", "score", "opinions", "review__human_decision"))
    papers = []
    for decision, score, opinions, human in rows.iterator(chunk_size=2000):
        first = opinions[0]["decision"] if opinions else decision
        second = opinions[1].get("decision") if opinions and len(opinions) > 1 else None
        papers.append((first, second, score, human))
    return papers


def _cost_per_paper(job: ScreeningJob) -> tuple[Decimal, Decimal, float]:
    """(first model's cost per paper it answered, second model's per paper it answered, share it answered)."""
    answered = ScreeningResult.objects.filter(job=job, decision__isnull=False, filtered=False).count()
    split = job.usage_by_model or {job.model: {"cost_usd": float(job.cost_usd)}}
    first_cost = Decimal(str(split.get(job.model, {}).get("cost_usd", 0)))
    first = first_cost / answered if answered else Decimal("0")
    if not job.second_opinion:
        return first, Decimal("0"), 0.0
    asked = ScreeningResult.objects.filter(job=job, opinions__isnull=False).count()
    second_cost = Decimal(str(split.get(job.second_opinion["model"], {}).get("cost_usd", 0)))
    second = second_cost / asked if asked else Decimal("0")
    return first, second, (asked / answered if answered else 0.0)


def _figures(name: str, papers: list[Paper], include: Callable[[Paper], bool | None], confidence: float,
             cost_per_paper: Decimal, description: str) -> dict:
    tp = fp = fn = tn = 0
    for paper in papers:
        verdict = include(paper)
        if verdict is None:  # outside this policy's subset
            continue
        relevant = paper[3] == "include"
        if verdict:
            tp, fp = tp + relevant, fp + (not relevant)
        else:
            fn, tn = fn + relevant, tn + (not relevant)
    evaluated = tp + fp + fn + tn
    return {
        "policy": name,
        "description": description,
        "evaluated": evaluated,
        "confusion_matrix": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "recall": stats.proportion(tp, tp + fn, confidence),
        "specificity": stats.proportion(tn, tn + fp, confidence),
        "left_for_humans_share": (tp + fp) / evaluated if evaluated else None,
        "cost_per_1000_usd": float(round(cost_per_paper * 1000, 6)),
    }


def replay(job: ScreeningJob, *, recommended: float | None, confidence: float) -> list[dict]:
    """The figures of every policy the job's stored opinions allow, on its papers with a human decision."""
    papers = _reviewed(job)
    first_cost, second_cost, asked_share = _cost_per_paper(job)
    out = [_figures("first_model", papers, lambda p: p[0] == "include", confidence, first_cost,
                    f"{job.model} alone at the job's threshold ({job.threshold:g})")]
    if job.second_opinion:
        second = job.second_opinion["model"]
        both = first_cost + second_cost * Decimal(str(asked_share))
        out.append(_figures("second_model", papers, lambda p: None if p[1] is None else p[1] == "include",
                            confidence, second_cost,
                            f"{second} alone, on the papers it answered (apply_to {job.second_opinion['apply_to']})"))
        for rule in ("any_include", "both_include"):
            out.append(_figures(rule, papers, lambda p, r=rule: decide(p[0], p[1], r) == "include", confidence,
                                both, f"{job.model} then {second} on the papers it answered, rule {rule}"))
    if recommended is not None:
        out.append(_figures("first_model_recommended_threshold", papers,
                            lambda p: p[2] is not None and p[2] >= recommended, confidence, first_cost,
                            f"{job.model} alone at the recommended threshold ({recommended:g})"))
    return out


def policy_table(rows: list[dict], level: str) -> str:
    """The replay as a plain-text table (the command line's summary)."""

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    def recall(row: dict) -> str:
        r = row["recall"]
        return "—" if r is None else f"{r['estimate']:.3f} ({r['lower']:.3f}–{r['upper']:.3f})"

    header = f"  {'policy':<34} {'n':>6}  {'recall (' + level + ' CI)':<24} {'specificity':>11} {'to humans':>9} {'$/1,000':>9}"
    lines = [header]
    for row in rows:
        specificity = row["specificity"]
        lines.append(f"  {row['policy']:<34} {row['evaluated']:>6}  {recall(row):<24} "
                     f"{share(None if specificity is None else specificity['estimate']):>11} "
                     f"{share(row['left_for_humans_share']):>9} {row['cost_per_1000_usd']:>9.4f}")
    return "\n".join(lines)

"""Exact binomial figures and the rules built on them.

Every interval is Clopper–Pearson ("exact"), computed by `scipy.stats.binomtest`:
two-sided intervals describe a proportion; one-sided bounds certify one. The
formulas are written out in docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scipy import stats

# The largest sample the planner considers; see `elusion_sample_size`.
MAX_PLANNED_SAMPLE = 1_000_000


def proportion(successes: int, trials: int, confidence: float) -> dict | None:
    """`successes / trials` with its two-sided exact interval at `confidence`; None when there are no trials."""
    if trials <= 0:
        return None
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return {"estimate": successes / trials, "lower": float(interval.low), "upper": float(interval.high),
            "successes": successes, "trials": trials}


def upper_bound(successes: int, trials: int, confidence: float) -> float:
    """One-sided exact upper bound on a proportion (1.0 when there are no trials)."""
    if trials <= 0:
        return 1.0
    test = stats.binomtest(successes, trials, alternative="less")
    return float(test.proportion_ci(confidence_level=confidence, method="exact").high)


def lower_bound(successes: int, trials: int, confidence: float) -> float:
    """One-sided exact lower bound on a proportion (0.0 when there are no trials)."""
    if trials <= 0:
        return 0.0
    test = stats.binomtest(successes, trials, alternative="greater")
    return float(test.proportion_ci(confidence_level=confidence, method="exact").low)


def elusion_recall_bound(*, confirmed: int, excluded: int, found: int, sampled: int,
                         confidence: float) -> tuple[float, float | None]:
    """(upper bound on missed includes, lower bound on recall) from an elusion sample.

    missed_upper = excluded × CP_upper(found, sampled); recall_lower = confirmed / (confirmed + missed_upper),
    None when both are 0 (nothing included, nothing to miss).
    """
    missed_upper = excluded * upper_bound(found, sampled, confidence) if excluded else 0.0
    denominator = confirmed + missed_upper
    return missed_upper, (confirmed / denominator if denominator > 0 else None)


def _smallest(passes: Callable[[int], bool], high: int) -> int | None:
    """The smallest n in 1..high with passes(n), for a `passes` that stays true once true."""
    if high < 1 or not passes(high):
        return None
    low = 1
    while low < high:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle + 1
    return low


def elusion_sample_size(*, excluded: int, confirmed: int, target_recall: float, confidence: float) -> int | None:
    """The smallest elusion sample that certifies `target_recall` if it finds no include.

    None when no sample can (no confirmed includes), 0 when nothing is excluded. The
    binomial bound treats the sample as drawn with replacement, which is conservative for a
    sample drawn without replacement, so the size may exceed the population: then reviewing
    every excluded paper is the way to certify.
    """
    if excluded == 0:
        return 0
    if confirmed == 0:
        return None

    def certifies(n: int) -> bool:
        _, recall = elusion_recall_bound(confirmed=confirmed, excluded=excluded, found=0, sampled=n,
                                         confidence=confidence)
        return recall is not None and recall >= target_recall

    return _smallest(certifies, MAX_PLANNED_SAMPLE)


def positives_needed(*, target_recall: float, confidence: float) -> int | None:
    """How many human-included papers a random sample must hold, all of them found by the
    model, for the one-sided lower bound on recall to reach `target_recall`."""
    return _smallest(lambda n: lower_bound(n, n, confidence) >= target_recall, MAX_PLANNED_SAMPLE)


def fixed_sequence(steps: Iterable[tuple[float, float | None]], target: float) -> tuple[float | None, list[dict]]:
    """Fixed-sequence testing of "recall ≥ target" at thresholds in the given order (most inclusive first).

    `steps` yields (threshold, one-sided lower bound on recall; None when it cannot be bounded).
    Each threshold is tested at the full confidence level only while every earlier one passed,
    so the whole scan keeps the family-wise error rate at 1 − confidence. Returns the last
    threshold that passed (None if the first failed) and the thresholds tested.
    """
    recommended, tested = None, []
    for threshold, bound in steps:
        passed = bound is not None and bound >= target
        tested.append({"threshold": threshold, "recall_lower_bound": bound, "passed": passed})
        if not passed:
            break
        recommended = threshold
    return recommended, tested

"""How a paper's verdicts become its score, its decision, and whether a human should look."""

from __future__ import annotations

from screening.prompts import criterion_ids


def score_verdicts(verdicts: dict[str, str], criteria: dict) -> float:
    """Mean over inclusion criteria of met=1, unclear=0.5, not_met=0; any exclusion met → 0."""
    ids = criterion_ids(criteria)
    if any(kind == "exclusion" and verdicts.get(cid) == "met" for cid, kind, _, _ in ids):
        return 0.0
    weights = {"met": 1.0, "unclear": 0.5, "not_met": 0.0}
    inclusion = [weights[verdicts.get(cid, "unclear")] for cid, kind, _, _ in ids if kind == "inclusion"]
    return sum(inclusion) / len(inclusion) if inclusion else 1.0


# Below this confidence a paper is flagged for a human even when no criterion was unclear.
REVIEW_BELOW_CONFIDENCE = 0.6


def decide(score: float, threshold: float) -> str:
    """`include` when the score reaches the job's threshold, else `exclude`."""
    return "include" if score >= threshold else "exclude"


def needs_review(verdicts: dict[str, str], confidence: float) -> bool:
    """A human should look: a criterion was unclear, or the model was not confident."""
    return "unclear" in verdicts.values() or confidence < REVIEW_BELOW_CONFIDENCE

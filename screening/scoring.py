"""How a paper's verdicts become its score."""

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

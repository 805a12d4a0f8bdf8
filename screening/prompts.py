"""Screening prompts and their structured answer.

The fixed part (instructions, research question, criteria) is the whole
system message and comes first, so every call of a job shares one prefix
the provider can cache; the paper is the only thing that varies. Answers
are terse on purpose: output tokens dominate the cost.

Import-safe without Django, like `screening.mock_answers`, which answers these
prompts offline. How verdicts become a score: `screening.scoring`.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, create_model

Verdict = Literal["met", "not_met", "unclear"]


class CriterionVerdict(BaseModel):
    verdict: Verdict
    reason: str


DECISION_SCHEMA = "ScreeningDecision"


@functools.lru_cache(maxsize=256)
def decision_schema(ids: tuple[str, ...]) -> type[BaseModel]:
    """The answer schema for one set of criteria: one required property per criterion id.

    Keyed by id, the strict schema makes the model answer every criterion, and
    the answer carries no repeated `"id": ...` per verdict (output tokens are
    most of the cost). The class is named `ScreeningDecision` for every job.
    """
    verdicts = create_model("Verdicts", **{cid: (CriterionVerdict, ...) for cid in ids})
    return create_model(DECISION_SCHEMA, verdicts=(verdicts, ...), reasoning=(str, ...), confidence=(float, ...))


INSTRUCTIONS = """You screen titles and abstracts for a systematic review.
For every criterion below answer met, not_met, or unclear (the text does not say). Judge only from the given text.
Answer every criterion id; each reason at most 10 words; reasoning: one short sentence; confidence: 0 to 1."""


def system_prompt(criteria: dict) -> str:
    lines = [INSTRUCTIONS, ""]
    question = (criteria.get("research_question") or "").strip()
    if question:
        lines += [f"Research question: {question}", ""]
    inclusion = criteria.get("inclusion") or []
    exclusion = criteria.get("exclusion") or []
    if inclusion:
        lines.append("Inclusion criteria:")
        lines += [f"I{i + 1}. {text}" for i, text in enumerate(inclusion)]
    if exclusion:
        lines.append("Exclusion criteria:")
        lines += [f"E{i + 1}. {text}" for i, text in enumerate(exclusion)]
    return "\n".join(lines)


def paper_prompt(title: str, abstract: str, keywords: list[str] | None) -> str:
    parts = [f"Title: {title.strip() or '(none)'}"]
    if keywords:
        parts.append("Keywords: " + "; ".join(keywords))
    parts.append(f"Abstract: {abstract.strip() or '(no abstract)'}")
    return "\n".join(parts)


def messages_for(system: str, title: str, abstract: str, keywords: list[str] | None) -> list[dict]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": paper_prompt(title, abstract, keywords)},
    ]


def criterion_ids(criteria: dict) -> list[tuple[str, str, int, str]]:
    """[(id, kind, index, text)] in prompt order."""
    out = [(f"I{i + 1}", "inclusion", i, t) for i, t in enumerate(criteria.get("inclusion") or [])]
    out += [(f"E{i + 1}", "exclusion", i, t) for i, t in enumerate(criteria.get("exclusion") or [])]
    return out

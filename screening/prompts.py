"""Screening prompts and their structured answer.

The fixed part (instructions, research question, criteria) is the whole
system message and comes first, so every call of a job shares one prefix
the provider can cache; the paper is the only thing that varies. Answers
are terse on purpose: output tokens dominate the cost.

Import-safe without Django: the test fake server uses `mock_answer`.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

from pydantic import BaseModel, create_model

Verdict = Literal["met", "not_met", "unclear"]


class CriterionVerdict(BaseModel):
    verdict: Verdict
    reason: str


@functools.lru_cache(maxsize=256)
def decision_schema(ids: tuple[str, ...]) -> type[BaseModel]:
    """The answer schema for one set of criteria: one required property per criterion id.

    Keyed by id, the strict schema makes the model answer every criterion, and
    the answer carries no repeated `"id": ...` per verdict (output tokens are
    most of the cost). The class is named `ScreeningDecision` for every job.
    """
    verdicts = create_model("Verdicts", **{cid: (CriterionVerdict, ...) for cid in ids})
    return create_model("ScreeningDecision", verdicts=(verdicts, ...), reasoning=(str, ...), confidence=(float, ...))


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


# --- the deterministic answer (mock backend and test fake) ---------------------

_WORD = re.compile(r"[a-z0-9]+")
_CRITERION = re.compile(r"^([IE]\d+)\. (.*)$", re.MULTILINE)
_STOP = frozenset(
    """about above after again against also among another any are because been before being between both
    but can could does doing during each either from further have having here however into just more most
    must only other over same should some such than that their them then there these they this those
    through under until very were what when where which while will with within without would your paper
    papers study studies report reports patient patients people participants""".split()
)


def _stems(text: str) -> set[str]:
    return {w[:6] for w in _WORD.findall(text.lower()) if len(w) >= 4 and w not in _STOP}


def mock_answer(messages: list[dict]) -> dict:
    """Verdicts by word overlap: met when at least half of a criterion's content words
    appear in the paper, unclear when some do (or the paper has no text), else not_met."""
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    paper = next((m["content"] for m in messages if m.get("role") == "user"), "")
    body = paper.replace("(no abstract)", "").replace("(none)", "")
    paper_stems = _stems(re.sub(r"^(Title|Keywords|Abstract):", "", body, flags=re.MULTILINE))
    verdicts = {}
    for cid, text in _CRITERION.findall(system):
        words = _stems(text)
        if not paper_stems or not words:
            verdict, reason = "unclear", "Too little text."
        else:
            hits = len(words & paper_stems) / len(words)
            if hits >= 0.5:
                verdict, reason = "met", "Key terms present."
            elif hits > 0:
                verdict, reason = "unclear", "Some key terms present."
            else:
                verdict, reason = "not_met", "Key terms absent."
        verdicts[cid] = {"verdict": verdict, "reason": reason}
    unclear = sum(v["verdict"] == "unclear" for v in verdicts.values())
    confidence = round(0.9 - 0.15 * unclear, 2) if verdicts else 0.5
    met = sum(v["verdict"] == "met" for v in verdicts.values())
    return {
        "verdicts": verdicts,
        "reasoning": f"Keyword match: {met} of {len(verdicts)} criteria met, {unclear} unclear.",
        "confidence": max(0.1, confidence),
    }


def score_verdicts(verdicts: dict[str, str], criteria: dict) -> float:
    """Mean over inclusion criteria of met=1, unclear=0.5, not_met=0; any exclusion met → 0."""
    ids = criterion_ids(criteria)
    if any(kind == "exclusion" and verdicts.get(cid) == "met" for cid, kind, _, _ in ids):
        return 0.0
    weights = {"met": 1.0, "unclear": 0.5, "not_met": 0.0}
    inclusion = [weights[verdicts.get(cid, "unclear")] for cid, kind, _, _ in ids if kind == "inclusion"]
    return sum(inclusion) / len(inclusion) if inclusion else 1.0

"""Criteria consolidation: normalisation, the prompt and its lenient structured answer.

The answer schema is deliberately lenient (every proposal field optional,
malformed proposals kept with their raw value) so that one bad proposal
becomes one `schema` warning instead of failing the whole answer; the
strict checks run server-side in `criteria.services`.

Import-safe without Django: the test fake server uses `mock_answer`.
"""

from __future__ import annotations

import re
import string
import unicodedata
from difflib import SequenceMatcher
from typing import Any

from pydantic import BaseModel, PrivateAttr, ValidationError, field_validator

MAX_PROPOSAL_CHARS = 300
# Two normalised criteria at least this similar are the same criterion (typos, plurals).
NEAR_DUPLICATE_RATIO = 0.95


class ProposalDraft(BaseModel):
    text: str | None = None
    rationale: str | None = None
    merged_from: list[int] | None = None
    confidence: float | None = None

    # What the model sent, and why it does not fit (kept out of the JSON schema).
    _raw: Any = PrivateAttr(default=None)
    _invalid: str | None = PrivateAttr(default=None)

    @property
    def raw(self) -> Any:
        return self._raw

    @property
    def invalid(self) -> str | None:
        return self._invalid


class ConsolidatedCriteria(BaseModel):
    inclusion: list[ProposalDraft]
    exclusion: list[ProposalDraft]

    @field_validator("inclusion", "exclusion", mode="before")
    @classmethod
    def _keep_malformed(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value  # the whole answer is malformed: let it fail
        drafts = []
        for item in value:
            try:
                draft = ProposalDraft.model_validate(item)
            except ValidationError as exc:
                draft = ProposalDraft()
                draft._invalid = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'proposal'}: {e['msg']}" for e in exc.errors())
            draft._raw = item
            drafts.append(draft)
        return drafts


INSTRUCTIONS = """You consolidate eligibility criteria for a systematic review.
Criteria proposed by several people are listed with their index. Merge criteria that say the same thing,
reword each merged criterion as one clear, testable sentence (at most 300 characters), keep inclusion and
exclusion separate, and drop nothing substantive. For each proposal give: text; rationale (one sentence);
merged_from (the indexes of every input criterion it covers); confidence (0 to 1) that the merge is right."""


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used to find duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if ch in string.punctuation or unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def is_near_duplicate(a: str, b: str) -> bool:
    return a == b or SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_DUPLICATE_RATIO


def messages_for(research_question: str, criteria: list[tuple[int, str, str]]) -> list[dict]:
    """`criteria`: [(input index, kind, text)] of the unique criteria only."""
    lines = []
    if research_question:
        lines += [f"Research question: {research_question}", ""]
    lines.append("Criteria:")
    lines += [f"[{index}] ({kind}) {text}" for index, kind, text in criteria]
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "\n".join(lines)}]


# --- the deterministic answer (mock backend and test fake) ---------------------

_LINE = re.compile(r"^\[(\d+)\] \((inclusion|exclusion)\) (.*)$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w[:6] for w in _WORD.findall(text.lower()) if len(w) >= 4}


def mock_answer(messages: list[dict]) -> dict:
    """Groups criteria of one kind whose content words overlap by at least half; the
    longest text of a group stands for it (trimmed to 300 characters)."""
    user = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
    out: dict[str, list[dict]] = {"inclusion": [], "exclusion": []}
    groups: dict[str, list[list[tuple[int, str]]]] = {"inclusion": [], "exclusion": []}
    for index, kind, text in _LINE.findall(user):
        words = _words(text)
        for group in groups[kind]:
            other = _words(group[0][1])
            if words and other and len(words & other) * 2 >= min(len(words), len(other)):
                group.append((int(index), text))
                break
        else:
            groups[kind].append([(int(index), text)])
    for kind, kind_groups in groups.items():
        for group in kind_groups:
            text = max((t for _, t in group), key=len)[:MAX_PROPOSAL_CHARS]
            merged = len(group) > 1
            out[kind].append({
                "text": text,
                "rationale": f"Merged {len(group)} overlapping criteria." if merged else "Kept as proposed.",
                "merged_from": sorted(i for i, _ in group),
                "confidence": 0.8 if merged else 0.9,
            })
    return out

"""Criteria consolidation: the prompt and its lenient structured answer.

The answer schema is deliberately lenient (every proposal field optional,
malformed proposals kept with their raw value) so that one bad proposal
becomes one `schema` warning instead of failing the whole answer; the
strict checks run server-side in `criteria.services`.

Import-safe without Django, like `criteria.mock_answers`, which answers this
prompt offline. Which criteria are the same before any prompt: `criteria.duplicates`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, PrivateAttr, ValidationError, field_validator

MAX_PROPOSAL_CHARS = 300


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


def messages_for(research_question: str, criteria: list[tuple[int, str, str]]) -> list[dict]:
    """`criteria`: [(input index, kind, text)] of the unique criteria only."""
    lines = []
    if research_question:
        lines += [f"Research question: {research_question}", ""]
    lines.append("Criteria:")
    lines += [f"[{index}] ({kind}) {text}" for index, kind, text in criteria]
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "\n".join(lines)}]

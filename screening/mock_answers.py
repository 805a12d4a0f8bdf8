"""The deterministic answer to a screening prompt (mock backend and test fake server).

Import-safe without Django: the test fake server imports it directly.
"""

from __future__ import annotations

import re

from screening.prompts import DECISION_SCHEMA

SCHEMA_NAME = DECISION_SCHEMA

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



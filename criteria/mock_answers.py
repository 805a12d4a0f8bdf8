"""The deterministic answer to a consolidation prompt (mock backend and test fake server).

Import-safe without Django: the test fake server imports it directly.
"""

from __future__ import annotations

import re

from criteria.prompts import MAX_PROPOSAL_CHARS, ConsolidatedCriteria

SCHEMA_NAME = ConsolidatedCriteria.__name__

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

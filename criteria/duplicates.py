"""Which proposed criteria are the same criterion, found before any LLM call (they cost no tokens)."""

from __future__ import annotations

import string
import unicodedata
from difflib import SequenceMatcher

# Two normalised criteria at least this similar are the same criterion (typos, plurals).
NEAR_DUPLICATE_RATIO = 0.95


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used to find duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if ch in string.punctuation or unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def is_near_duplicate(a: str, b: str) -> bool:
    return a == b or SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_DUPLICATE_RATIO

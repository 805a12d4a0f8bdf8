"""Abstract cleaning and prechecks: a record's indexing status before any LLM call.

Records that cannot be indexed (no abstract, too short, markup or binary
debris) are found here, so they cost no tokens.
"""

from __future__ import annotations

import html
import re
import unicodedata

MIN_WORDS = 20
# Below this share of letters among the visible characters the text is debris, not prose.
MIN_LETTER_SHARE = 0.5


class Status:
    """A record's indexing status: `ok` once indexed, why the precheck refused it, or `llm_error`."""

    OK = "ok"
    MISSING_ABSTRACT = "missing_abstract"
    TOO_SHORT = "too_short"
    MALFORMED = "malformed"
    LLM_ERROR = "llm_error"

    ALL = (OK, MISSING_ABSTRACT, TOO_SHORT, MALFORMED, LLM_ERROR)


_TAG = re.compile(r"<[^>]{0,2000}>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ufeff]")


def clean_abstract(text: str) -> str:
    """Strip HTML tags and entities, control characters and replacement characters; collapse spaces."""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _TAG.sub(" ", text)  # tags that were entity-escaped
    text = _CONTROL.sub(" ", text)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") else ch for ch in text)
    return " ".join(text.split())


def precheck(abstract: str | None) -> tuple[str, str | None, str]:
    """(indexing_status, extraction_error, cleaned abstract) before any LLM call."""
    if abstract is None or not str(abstract).strip():
        return Status.MISSING_ABSTRACT, "The record has no abstract.", ""
    cleaned = clean_abstract(str(abstract))
    visible = [ch for ch in cleaned if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible)
    if not visible or letters / len(visible) < MIN_LETTER_SHARE:
        return (Status.MALFORMED, "The abstract is markup or binary debris with no readable text left after cleaning.",
                cleaned)
    words = sum(1 for w in cleaned.split() if any(ch.isalpha() for ch in w))
    if words < MIN_WORDS:
        return Status.TOO_SHORT, f"The abstract has {words} words after cleaning; at least {MIN_WORDS} are needed.", cleaned
    return Status.OK, None, cleaned

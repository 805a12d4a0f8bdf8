"""The paper fields clustering reads (title, abstract, keywords), tolerant of loose input."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def field_text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def paper_keywords(paper: Mapping) -> list[str]:
    raw = paper.get("keywords") or []
    if isinstance(raw, str):
        # Tolerate "a; b; c" as exported by CSV/RIS tools.
        raw = raw.split(";")
    if not isinstance(raw, Iterable):
        return []
    return [k.strip() for k in (field_text(x) for x in raw) if k.strip()]

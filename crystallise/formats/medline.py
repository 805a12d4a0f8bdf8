"""PubMed/MEDLINE text import (PubMed's "Save > PubMed format", .nbib/.txt).

Each line is a tag left-aligned in four columns, ``- `` and the value
(``PMID- 123``, ``TI  - ...``); values continue on lines indented by six
spaces; records start at ``PMID-`` and are separated by blank lines.
"""

from __future__ import annotations

from collections.abc import Iterator

from .common import find_year, invalid, iter_lines, normalize_doi

_KEYWORD_TAGS = ("OT", "MH")


def _split_tag(line: str) -> tuple[str, str] | None:
    if len(line) < 5 or line[4] != "-" or (len(line) > 5 and line[5] != " "):
        return None
    tag = line[:4].rstrip()
    if not tag or not tag.isalnum() or not tag.isupper() or " " in tag:
        return None
    return tag, line[6:].strip()


def _records(text: str) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Yield (first line number, [(tag, value), ...]) per record."""
    fields: list[tuple[str, str]] | None = None
    start = 0
    for number, raw in enumerate(iter_lines(text), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        parsed = _split_tag(line)
        if parsed is None:
            if fields and line[:1] in (" ", "\t"):
                tag, value = fields[-1]
                fields[-1] = (tag, f"{value} {line.strip()}".strip())
                continue
            raise invalid(
                f"MEDLINE line {number}: expected a tag such as 'TI  - ', got {line[:40]!r}"
            )
        tag, value = parsed
        if tag == "PMID":
            if fields is not None:
                yield start, fields
            fields, start = [], number
        elif fields is None:
            raise invalid(
                f"MEDLINE line {number}: expected the record to start with 'PMID- '"
            )
        fields.append((tag, value))
    if fields is not None:
        yield start, fields


def _keyword(tag: str, value: str) -> str:
    if tag == "MH":
        # "Analgesics/*therapeutic use": the heading is the keyword; the starred
        # subheadings would split one concept into many rare variants.
        return value.split("/", 1)[0].lstrip("*").strip()
    return value.lstrip("*").strip()


def _doi(values: list[str]) -> str | None:
    for value in values:
        if value.endswith("[doi]"):
            return normalize_doi(value[: -len("[doi]")])
    return None


def iter_records(text: str) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, raw paper)`` for each MEDLINE record in `text`."""
    for number, (line, fields) in enumerate(_records(text), start=1):
        where = f"MEDLINE record {number} (line {line})"
        first: dict[str, str] = {}
        keywords: list[str] = []
        ids: list[str] = []
        for tag, value in fields:
            first.setdefault(tag, value)
            if tag in _KEYWORD_TAGS and (keyword := _keyword(tag, value)):
                if keyword not in keywords:
                    keywords.append(keyword)
            elif tag in ("LID", "AID"):
                ids.append(value)
        pmid = first.get("PMID", "")
        yield (
            where,
            {
                "id": f"pmid:{pmid}" if pmid else "",
                # Books and chapters carry their title in BTI/CTI instead of TI.
                "title": first.get("TI") or first.get("BTI") or first.get("CTI") or "",
                "abstract": first.get("AB", ""),
                "keywords": keywords,
                "year": find_year(first.get("DP")),
                "doi": _doi(ids),
            },
        )

"""RIS import and export, on top of `rispy`.

rispy parses a whole text into a list; we cut the text into one chunk per
``TY`` ... ``ER`` record ourselves and hand each chunk to `rispy.loads`, so
a huge upload is parsed lazily (`max_records` can stop it early) and errors
can name the record and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import rispy

from .common import (
    find_year,
    invalid,
    iter_lines,
    normalize_doi,
    one_line,
    split_keywords,
)

DECISION_PREFIX = "crystallise:"
CONTENT_TYPE = "application/x-research-info-systems"


def _tag(line: str) -> str | None:
    # The same rule rispy's parser applies, so both agree on what a tag is.
    if line[2:5] == "  -" and line[:2].isupper() and line[:1].isalpha():
        return line[:2]
    return None


def _chunks(text: str) -> Iterator[tuple[int, int, list[str]]]:
    """Yield (record number, first line number, lines) per TY..ER record."""
    chunk: list[str] | None = None
    start = count = 0
    for number, raw in enumerate(iter_lines(text), start=1):
        line = raw.rstrip("\r\n")
        tag = _tag(line)
        if tag == "TY":
            if chunk is not None:
                raise invalid(
                    f"RIS record {count} (line {start}) has no 'ER  - ' end tag "
                    f"before the next record at line {number}"
                )
            chunk, start = [line], number
            count += 1
        elif chunk is not None:
            chunk.append(line)
            if tag == "ER":
                yield count, start, chunk
                chunk = None
        # Lines outside records (headers such as "1." or "Provider: ...") are
        # skipped, as rispy itself does.
    if chunk is not None:
        raise invalid(f"RIS record {count} (line {start}) has no 'ER  - ' end tag")


def _first(entry: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v.strip()), None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _keywords(entry: Mapping[str, Any]) -> list[str]:
    keywords = []
    for value in entry.get("keywords") or []:
        # Our own export tags decisions as keywords; re-importing that file
        # must not show the previous verdict to the model.
        keywords.extend(
            k
            for k in split_keywords(str(value))
            if not k.lower().startswith(DECISION_PREFIX)
        )
    return keywords


def entry_to_raw(entry: Mapping[str, Any], number: int) -> dict:
    """A rispy entry as a raw paper dict (validated later in `common`)."""
    doi = normalize_doi(_first(entry, "doi"))
    paper_id = _first(entry, "id", "accession_number") or doi or f"ris:{number}"
    return {
        "id": paper_id,
        "title": _first(entry, "title", "primary_title"),
        "abstract": _first(entry, "abstract", "notes_abstract"),
        "keywords": _keywords(entry),
        # Reference managers write "In press" or "n.d." here: no year, not an error.
        "year": find_year(_first(entry, "year", "publication_year", "date")),
        "doi": doi,
    }


def iter_records(text: str) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, raw paper)`` for each RIS record in `text`."""
    for number, line, chunk in _chunks(text):
        where = f"RIS record {number} (line {line})"
        try:
            entries = rispy.loads("\n".join(chunk))
        # rispy has no error type of its own; these are what its dict and
        # string handling can raise on malformed input.
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise invalid(f"{where}: could not be read as RIS ({exc})") from None
        if len(entries) != 1:
            raise invalid(f"{where}: could not be read as RIS")
        yield where, entry_to_raw(entries[0], number)


class _Writer(rispy.RisWriter):
    # rispy numbers each record ("1.", "2.", ...); written one record at a
    # time they would all be "1.", and reference managers need no header.
    def set_header(self, count: int) -> str:
        return ""


def decision_keyword(decision: Any) -> str:
    if decision in ("include", "exclude"):
        return DECISION_PREFIX + decision
    return DECISION_PREFIX + "error"


def row_to_entry(row: Mapping[str, Any]) -> dict:
    """A result row (paper fields + decision fields) as a rispy entry."""
    entry: dict[str, Any] = {"type_of_reference": "JOUR"}
    paper_id = one_line(row.get("id") or row.get("paper_id"))
    if paper_id:
        entry["id"] = paper_id
    for key in ("title", "abstract"):
        if value := one_line(row.get(key)):
            entry[key] = value
    if row.get("year") is not None:
        entry["year"] = one_line(row["year"])
    if doi := one_line(row.get("doi")):
        entry["doi"] = doi
    keywords = [one_line(k) for k in row.get("keywords") or [] if one_line(k)]
    keywords.append(decision_keyword(row.get("decision")))
    if row.get("needs_review"):
        keywords.append(DECISION_PREFIX + "needs_review")
    entry["keywords"] = keywords
    notes = [f"crystallise decision: {row.get('decision') or 'error'}"]
    if row.get("score") is not None:
        notes.append(f"crystallise score: {row['score']}")
    if row.get("needs_review"):
        notes.append("crystallise: needs review")
    if reasoning := one_line(row.get("reasoning")):
        notes.append(f"crystallise reasoning: {reasoning}")
    if error := one_line(row.get("error")):
        notes.append(f"crystallise error: {error}")
    # Human review (screening results): the reviewers' decision, a disagreement, and what stands.
    if row.get("human_decision"):
        notes.append(f"crystallise human decision: {row['human_decision']}")
    if row.get("conflict"):
        notes.append("crystallise: reviewers disagree")
    if "final_decision" in row:
        notes.append(f"crystallise final decision: {row['final_decision'] or 'error'}")
    entry["notes"] = notes
    return entry


def dump_ris(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Stream an RIS file, one record (ending in a blank line) per chunk."""
    writer = _Writer()
    for row in rows:
        yield writer.formats([row_to_entry(row)]) + "\n"

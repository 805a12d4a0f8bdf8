"""CSV import and export.

Headers are matched case- and whitespace-insensitively. Besides the
contract's ``id, title, abstract, keywords, year, doi`` we read the
ASReview/Cohen layout (``record_id, pubmedID, title, keywords, authors,
abstract, ...``) and the few names Zotero uses, since those are the files
reviewers actually have.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .common import invalid, iter_lines, misspelt_field

CONTENT_TYPE = "text/csv"
EXPECTED_COLUMNS = ("id", "title", "abstract", "keywords", "year", "doi")

# The stdlib default (128 KiB) is below what a pasted full text can reach,
# but a cap is still wanted: a runaway quote swallows the rest of the file
# into one field, and this turns that into an error instead of a 200 MiB
# abstract. The limit is process-wide; we only ever raise it.
FIELD_SIZE_LIMIT = 16 * 1024 * 1024
if csv.field_size_limit() < FIELD_SIZE_LIMIT:
    csv.field_size_limit(FIELD_SIZE_LIMIT)

_ALIASES = {
    "id": "id",
    "pubmedid": "pubmedid",
    "pubmed_id": "pubmedid",
    "pmid": "pubmedid",
    "record_id": "record_id",
    "title": "title",
    "primary_title": "title",
    "abstract": "abstract",
    "abstract_note": "abstract",  # Zotero
    "keywords": "keywords",
    "manual_tags": "keywords",  # Zotero
    "year": "year",
    "publication_year": "year",  # Zotero
    "doi": "doi",
}
_PMID_FLOAT_RE = re.compile(r"^(\d+)\.0+$")


def normalise_header(name: str) -> str:
    """A column name compared loosely: case, spaces, dashes and underscores aside."""
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def delimiter(text: str) -> str:
    """The delimiter of CSV `text`, from its header line: comma, semicolon (Excel in many European
    locales saves "CSV" with ";") or tab."""
    header = text[: text.find("\n") if "\n" in text[:65536] else 65536]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _columns(header: Sequence[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        key = _ALIASES.get(normalise_header(name))
        if key is None:
            if (known := misspelt_field(name)) is not None:
                raise invalid(f"CSV column {name.strip()!r} looks like a misspelling of {known!r}; rename it")
            continue
        if key in columns:
            raise invalid(
                f"CSV header has two columns for {key!r}: "
                f"{header[columns[key]]!r} and {name!r}"
            )
        columns[key] = index
    if "title" not in columns and "abstract" not in columns:
        found = ", ".join(repr(h.strip()) for h in header[:20]) or "none"
        raise invalid(
            "CSV header has neither a title nor an abstract column "
            f"(found: {found}). Expected columns: {', '.join(EXPECTED_COLUMNS)} "
            "(case-insensitive). Files that do not look like RIS, PubMed/MEDLINE "
            "or JSON Lines are read as CSV."
        )
    return columns


def _pmid(value: str) -> str:
    if value.lower().startswith("pmid:"):
        return value
    # Spreadsheets round-trip integer columns as "12345.0".
    match = _PMID_FLOAT_RE.match(value)
    return f"pmid:{match.group(1) if match else value}"


def _paper_id(cells: Mapping[str, str], number: int) -> str:
    if cells.get("id"):
        return cells["id"]
    if cells.get("pubmedid"):
        return _pmid(cells["pubmedid"])
    if cells.get("record_id"):
        return cells["record_id"]
    return f"csv:{number}"


def iter_records(text: str) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, raw paper)`` per non-blank data row of CSV `text`."""
    reader = csv.reader(iter_lines(text), delimiter=delimiter(text), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = _columns(header)
        number, last_line = 0, reader.line_num
        for row in reader:
            line, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            number += 1
            where = f"CSV row {number} (line {line})"
            if len(row) > len(header) and any(c.strip() for c in row[len(header) :]):
                raise invalid(
                    f"{where}: {len(row)} fields but the header has {len(header)} "
                    "(check the quoting and the delimiter)"
                )
            cells = {
                key: row[index].strip() if index < len(row) else ""
                for key, index in columns.items()
            }
            yield (
                where,
                {
                    "id": _paper_id(cells, number),
                    "title": cells.get("title", ""),
                    "abstract": cells.get("abstract", ""),
                    "keywords": cells.get("keywords", ""),
                    "year": cells.get("year", ""),
                    "doi": cells.get("doi", ""),
                },
            )
    except csv.Error as exc:
        raise invalid(f"CSV line {reader.line_num}: {exc}") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return "; ".join(value)
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def dump_csv(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> Iterator[str]:
    """Stream a CSV: the header line, then one line per row (missing keys empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        line = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate(0)
        return line

    writer.writerow(columns)
    yield flush()
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
        yield flush()

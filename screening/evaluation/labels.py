"""Reference labels read from a labelled file, one per record in the order the paper parser reads them.

The paper parser keeps only paper fields, so the label column is read here with
each format's own record boundaries: a CSV column (header case-insensitive), a
JSON/JSON Lines key, an RIS tag (`LB  - 1`) or a PubMed/MEDLINE tag.
"""

from __future__ import annotations

import csv
import io

from crystallise.formats import decode_text, detect_format
from crystallise.formats.csvfile import delimiter
from crystallise.formats.jsonl import iter_document_records, iter_records
from screening.reviews import FILE_DECISIONS


class LabelError(ValueError):
    pass


def _csv(text: str, column: str) -> list:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text))
    header = [name.strip().lower() for name in next(reader, [])]
    if column.strip().lower() not in header:
        raise LabelError(f"The file has no column {column!r} (columns: {', '.join(header[:20])}).")
    index = header.index(column.strip().lower())
    return [row[index] if index < len(row) else "" for row in reader if any(cell.strip() for cell in row)]


def _tagged(text: str, column: str, *, starts: str, tag_width: int) -> list:
    values: list = []
    tag = column.strip().upper()
    for line in text.splitlines():
        if line.startswith(starts):
            values.append(None)
        if values and line[:tag_width].rstrip() == tag and line[tag_width:tag_width + 1] == "-":
            values[-1] = line[tag_width + 1:].strip()
    return values


def read_labels(data: bytes, *, filename: str, column: str) -> list[str | None]:
    """The raw label of every record (None where a record has none)."""
    text = decode_text(data)
    fmt = detect_format(text, filename=filename)
    if fmt == "csv":
        return _csv(text, column)
    if fmt in ("jsonl", "json"):
        reader = iter_records if fmt == "jsonl" else iter_document_records
        return [None if obj.get(column) is None else str(obj.get(column)) for _, obj in reader(text)]
    if fmt == "ris":
        return _tagged(text, column, starts="TY  -", tag_width=4)
    return _tagged(text, column, starts="PMID-", tag_width=4)


def decisions(labels: list[str | None], papers: list[dict], *, column: str) -> dict[str, str]:
    """paper id → include/exclude from the labels (1/0, yes/no, true/false, include/exclude)."""
    if len(labels) != len(papers):
        raise LabelError(f"Read {len(labels)} labels from {column!r} for {len(papers)} papers.")
    out = {}
    for number, (label, paper) in enumerate(zip(labels, papers, strict=True), start=1):
        key = (label or "").strip().lower()
        # Spreadsheets write integer columns as "1.0".
        key = {"1.0": "1", "0.0": "0"}.get(key, key)
        if key not in FILE_DECISIONS:
            raise LabelError(f"Record {number} ({paper['id']}): label {label!r} in {column!r} is not one of "
                             "1/0, yes/no, true/false, include/exclude.")
        out[paper["id"]] = FILE_DECISIONS[key]
    return out

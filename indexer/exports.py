"""Streaming exports of an index job's results (CSV, JSONL): constant memory at any size."""

from __future__ import annotations

from collections.abc import Iterator

from crystallise.formats.csvfile import dump_csv
from crystallise.formats.jsonl import dump_jsonl
from indexer.prompts import FIELDS

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
BASE_COLUMNS = ["id", "title", "indexing_status", "extraction_error"]
CHUNK = 2000


def _rows(queryset, fields: list[str]) -> Iterator[dict]:
    for row in queryset.values("record__record_id", "record__title", "indexing_status", "extraction_error",
                               "fields", "llm_backend").iterator(chunk_size=CHUNK):
        values = row["fields"] or {}
        yield {"id": row["record__record_id"], "title": row["record__title"],
               "indexing_status": row["indexing_status"], "extraction_error": row["extraction_error"],
               "fields": {name: values.get(name) for name in fields} if row["fields"] is not None else None,
               "llm_backend": row["llm_backend"],
               **{name: values.get(name) for name in fields}}


def stream(job, queryset, fmt: str) -> tuple[str, Iterator[str]]:
    fields = [name for name in FIELDS if name in job.fields]
    rows = _rows(queryset, fields)
    if fmt == "csv":
        return FORMATS[fmt], dump_csv(rows, BASE_COLUMNS + fields)
    keep = ("id", "title", "indexing_status", "extraction_error", "fields", "llm_backend")
    return FORMATS[fmt], dump_jsonl({key: row[key] for key in keep} for row in rows)

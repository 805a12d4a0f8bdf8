"""Streaming exports of a job's results (CSV, RIS, JSONL): constant memory at any size."""

from __future__ import annotations

from collections.abc import Iterator

from crystallise.formats.csvfile import dump_csv
from crystallise.formats.jsonl import dump_jsonl
from crystallise.formats.ris import CONTENT_TYPE as RIS_CONTENT_TYPE
from crystallise.formats.ris import dump_ris
from screening import prompts
from screening.reviews import review_columns

FORMATS = {"csv": "text/csv; charset=utf-8", "ris": RIS_CONTENT_TYPE, "jsonl": "application/x-ndjson"}
BASE_COLUMNS = ["paper_id", "title", "decision", "score", "needs_review", "confidence", "cluster", "reasoning", "error",
                "human_decision", "conflict", "final_decision"]
CHUNK = 500


def verdict_columns(criteria: dict) -> list[str]:
    return [f"{kind}_{index}" for _, kind, index, _ in prompts.criterion_ids(criteria)]


def _rows(job, queryset) -> Iterator[dict]:
    # iterator(chunk_size) streams from a server-side cursor on PostgreSQL:
    # memory stays flat however many results the job has.
    fields = ("position", "cluster", "decision", "score", "needs_review", "confidence", "reasoning", "criteria",
              "error", "llm_backend", "paper__paper_id", "paper__title", "paper__abstract", "paper__keywords",
              "paper__year", "paper__doi", "review__human_decision", "review__conflict")
    for row in queryset.values(*fields).iterator(chunk_size=CHUNK):
        out = {
            "paper_id": row["paper__paper_id"], "id": row["paper__paper_id"], "title": row["paper__title"],
            "abstract": row["paper__abstract"], "keywords": row["paper__keywords"], "year": row["paper__year"],
            "doi": row["paper__doi"], "decision": row["decision"], "score": row["score"],
            "needs_review": row["needs_review"], "confidence": row["confidence"], "cluster": row["cluster"],
            "reasoning": row["reasoning"], "criteria": row["criteria"], "error": row["error"],
            "llm_backend": row["llm_backend"], **review_columns(row),
        }
        for entry in row["criteria"] or []:
            out[f"{entry['kind']}_{entry['index']}"] = entry["verdict"]
        yield out


def _jsonl(rows: Iterator[dict]) -> Iterator[dict]:
    keep = ("paper_id", "title", "cluster", "decision", "score", "needs_review", "confidence", "reasoning",
            "criteria", "error", "llm_backend", "human_decision", "conflict", "final_decision")
    for row in rows:
        yield {key: row[key] for key in keep}


def stream(job, queryset, fmt: str) -> tuple[str, Iterator[str]]:
    rows = _rows(job, queryset)
    if fmt == "csv":
        return FORMATS[fmt], dump_csv(rows, BASE_COLUMNS + verdict_columns(job.criteria))
    if fmt == "ris":
        return FORMATS[fmt], dump_ris(rows)
    return FORMATS[fmt], dump_jsonl(_jsonl(rows))

"""Exporting screening results (`crystallise.formats`): RIS, CSV and JSON Lines, each read back as papers.

The fixture files are described in tests/test_formats_import.py.
"""

from __future__ import annotations

import csv
import io
import json

import rispy

from crystallise.formats import parse_papers
from crystallise.formats.csvfile import dump_csv
from crystallise.formats.jsonl import dump_jsonl
from crystallise.formats.ris import dump_ris
from tests.formats_support import fixture

# --------------------------------------------------------------------------
# Exporters


def result_rows():
    papers = parse_papers(fixture("papers.ris"), filename="papers.ris")
    decisions = ["include", "exclude", None, "exclude", "include"]
    scores = {"include": 1.0, "exclude": 0.0, None: None}
    rows = []
    for paper, decision in zip(papers, decisions, strict=True):
        rows.append(
            {
                **paper,
                "decision": decision,
                "score": scores[decision],
                "needs_review": decision is None,
                "reasoning": "Meets P and I.\nER  - would end the record",
                "error": "upstream timeout" if decision is None else None,
            }
        )
    return papers, rows


def test_dump_ris_round_trip():
    papers, rows = result_rows()
    chunks = list(dump_ris(iter(rows)))
    assert len(chunks) == len(rows)  # one record per chunk: streamable
    entries = rispy.loads("".join(chunks))
    assert [e["id"] for e in entries] == [p["id"] for p in papers]
    assert [e["title"] for e in entries] == [p["title"] for p in papers]
    assert entries[0]["abstract"] == papers[0]["abstract"]
    assert entries[0]["year"] == "1999"
    assert entries[0]["doi"] == "10.5555/crystallise-fixture.1"
    assert "crystallise:include" in entries[0]["keywords"]
    assert "crystallise:exclude" in entries[1]["keywords"]
    assert {"crystallise:error", "crystallise:needs_review"} <= set(
        entries[2]["keywords"]
    )
    notes = entries[0]["notes"]
    assert "crystallise reasoning: Meets P and I. ER - would end the record" in notes
    assert any(n == "crystallise error: upstream timeout" for n in entries[2]["notes"])
    # Re-importing our export gives the papers back, without the verdicts.
    assert parse_papers("".join(chunks).encode()) == papers


def test_dump_csv_round_trip():
    papers, rows = result_rows()
    columns = [
        "paper_id",
        "id",
        "title",
        "keywords",
        "decision",
        "score",
        "needs_review",
    ]
    rows = [{**row, "paper_id": row["id"]} for row in rows]
    lines = list(dump_csv(iter(rows), columns))
    assert len(lines) == len(rows) + 1
    parsed = list(csv.reader(io.StringIO("".join(lines), newline="")))
    assert parsed[0] == columns
    assert [r[0] for r in parsed[1:]] == [p["id"] for p in papers]
    assert [r[2] for r in parsed[1:]] == [p["title"] for p in papers]
    assert parsed[1][3].split("; ") == papers[0]["keywords"]
    assert parsed[3][4:] == ["", "", "true"]
    # Our CSV export reads back as papers.
    reread = parse_papers("".join(lines).encode(), filename="results.csv")
    assert [p["id"] for p in reread] == [p["id"] for p in papers]


def test_dump_jsonl_round_trip():
    papers, rows = result_rows()
    rows[0]["reasoning"] = "line\u2028separator"
    lines = list(dump_jsonl(rows))
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert "".join(lines).splitlines() == [line.rstrip("\n") for line in lines]
    assert json.loads(lines[0])["reasoning"] == "line\u2028separator"
    assert parse_papers("".join(lines).encode(), filename="r.jsonl") == papers

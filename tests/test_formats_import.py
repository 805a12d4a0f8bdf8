"""Reading bibliographic records (`crystallise.formats`): the real datasets, RIS, MEDLINE, CSV, JSON Lines and JSON.

Fixtures in `tests/fixtures/` are real records (titles, abstracts, authors,
MeSH keywords) from the Cohen 2006 datasets in `shared/data/cohen_2006`
(ASReview, MIT licence). Their years, DOIs (Crossref's 10.5555 test prefix)
and pii values are illustrative, not bibliographic facts.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from crystallise.errors import ValidationError
from crystallise.formats import detect_format, normalize_papers, parse_papers
from tests.formats_support import error_of, fixture

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cohen_2006"


def cohen(name: str) -> bytes:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path.read_bytes()


def cohen_rows(name: str) -> dict[str, dict]:
    text = cohen(name).decode("utf-8")
    return {row["pubmedID"]: row for row in csv.DictReader(io.StringIO(text))}


# --------------------------------------------------------------------------
# Real datasets


@pytest.mark.parametrize(
    ("name", "count", "empty_abstracts"),
    [("ADHD.csv", 851, 48), ("Triptans.csv", 671, 77)],
)
def test_cohen_datasets(name, count, empty_abstracts):
    data = cohen(name)
    papers = parse_papers(data, filename=name)
    assert len(papers) == count
    ids = [p["id"] for p in papers]
    assert len(set(ids)) == count
    assert all(i.startswith("pmid:") for i in ids)
    assert sum(p["abstract"] == "" for p in papers) == empty_abstracts
    assert all(isinstance(p["title"], str) and p["title"] for p in papers)
    assert all(p["year"] is None and p["doi"] is None for p in papers)
    # MeSH headings keep their commas: only ";" separates keywords.
    assert any("," in k for p in papers for k in p["keywords"])
    assert set(papers[0]) == {"id", "title", "abstract", "keywords", "year", "doi"}
    # No filename, no content type: sniffed as CSV, same result.
    assert parse_papers(data) == papers


def test_cohen_keywords_and_text_are_verbatim():
    rows = cohen_rows("ADHD.csv")
    papers = {p["id"]: p for p in parse_papers(cohen("ADHD.csv"), filename="ADHD.csv")}
    row = rows["10051933"]
    paper = papers["pmid:10051933"]
    assert paper["title"] == row["title"]
    assert paper["abstract"] == row["abstract"]
    assert paper["keywords"][:3] == [
        "Acetaminophen",
        "Adenoidectomy",
        "Administration, Oral",
    ]


# --------------------------------------------------------------------------
# RIS


def test_ris_fixture_ids_fields_and_fallbacks():
    triptans = cohen_rows("Triptans.csv")
    papers = parse_papers(fixture("papers.ris"), filename="papers.ris")
    assert [p["id"] for p in papers] == [
        "pmid:10227648",  # ID
        "10231608",  # no ID: AN
        "10.5555/crystallise-fixture.3",  # only DO (normalised from a doi.org URL)
        "ris:4",  # neither: position
        "pmid:9484515",
    ]
    first, second, third, fourth, fifth = papers
    assert first["year"] == 1999  # "1999///"
    assert first["doi"] == "10.5555/crystallise-fixture.1"
    assert first["title"] == triptans["10227648"]["title"]
    assert first["keywords"][0] == "Administration, Intranasal"
    assert second["year"] == 1999 and second["doi"] is None
    # T1/N2/Y1 instead of TI/AB/PY; one KW line holding "a; b; c" is split.
    assert third["title"] == triptans["10427351"]["title"]
    assert third["abstract"] == triptans["10427351"]["abstract"]
    assert third["year"] == 1999
    assert "Receptor, Serotonin, 5-HT1B" in third["keywords"]
    # Multi-line AB is joined; our own decision keyword is not re-imported.
    assert fourth["abstract"] == triptans["10643958"]["abstract"]
    assert not any(k.startswith("crystallise:") for k in fourth["keywords"])
    assert fourth["year"] is None
    assert fifth["year"] is None  # "In press"
    assert "Clínico Quirúrgico" in fifth["abstract"]


def test_ris_is_sniffed_despite_header_and_crlf():
    data = fixture("papers.ris")
    assert b"\r\n" in data and not data.startswith(b"TY")
    assert detect_format(data.decode()) == "ris"
    assert len(parse_papers(data)) == 5
    assert len(parse_papers(data, filename="export.txt")) == 5


def test_ris_missing_end_tag():
    data = b"TY  - JOUR\nTI  - One\nER  - \n\nTY  - JOUR\nTI  - Two\n"
    err = error_of(data, filename="x.ris")
    assert "record 2 (line 5)" in err.detail and "ER" in err.detail
    data = b"TY  - JOUR\nTI  - One\nTY  - JOUR\nTI  - Two\nER  - \n"
    assert "before the next record at line 3" in error_of(data, filename="x.ris").detail


def test_ris_without_records():
    err = error_of(b"id,title\n1,Something\n", filename="x.ris")
    assert "no RIS records" in err.detail


# --------------------------------------------------------------------------
# MEDLINE


def test_medline_fixture():
    adhd = cohen_rows("ADHD.csv")
    papers = parse_papers(fixture("papers.nbib"), filename="papers.nbib")
    assert [p["id"] for p in papers] == [
        "pmid:11313165",
        "pmid:11958362",
        "pmid:12188588",
    ]
    for paper in papers:
        row = adhd[paper["id"].removeprefix("pmid:")]
        assert paper["title"] == row["title"]
        assert paper["abstract"] == row["abstract"]  # continuation lines joined
    assert [p["year"] for p in papers] == [2001, 2002, 2002]
    assert [p["doi"] for p in papers] == [
        "10.5555/crystallise-fixture.177",
        None,
        "10.5555/crystallise-fixture.348",  # the [doi] AID, not the [pii]
    ]
    # MeSH subheadings and stars are dropped, duplicates collapsed.
    first = papers[0]["keywords"]
    assert first[:2] == ["Weight Gain", "Amantadine"]
    assert len(first) == len(set(first))
    assert "Antipsychotic Agents" in papers[1]["keywords"]
    assert "Fagerström" in papers[2]["abstract"]


def test_medline_sniffed_as_pubmed_txt():
    data = fixture("papers.nbib")
    assert len(parse_papers(data, filename="pubmed-olanzapine-set.txt")) == 3
    assert len(parse_papers(data)) == 3


def test_medline_bad_line():
    data = b"PMID- 1\nTI  - A title\nthis is not a tag\n"
    assert "MEDLINE line 3" in error_of(data, filename="x.nbib").detail


# --------------------------------------------------------------------------
# CSV


def test_csv_fixture_messy_headers():
    papers = parse_papers(fixture("papers.csv"), filename="papers.csv")
    assert [p["id"] for p in papers] == [
        "pmid:12090443",
        "pmid:12204387",
        "pmid:11061283",
        "pmid:12222083",
    ]
    assert papers[0]["doi"] == "10.5555/crystallise-fixture.331"
    assert papers[0]["year"] == 2002
    assert "\n" in papers[1]["abstract"]  # a quoted newline survives
    assert papers[2]["abstract"] == "" and "naïve" in papers[2]["title"]
    assert papers[3]["year"] is None
    assert "Child, Preschool" in papers[1]["keywords"]


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        ("record_id,pubmedID,title,abstract", "7,12345,T,A", "pmid:12345"),
        ("record_id,pubmedID,title,abstract", "7,12345.0,T,A", "pmid:12345"),
        ("record_id,title,abstract", "7,T,A", "7"),
        ("title,abstract", "T,A", "csv:1"),
        ("Id,pubmedid,title", "x1,12345,T", "x1"),
    ],
)
def test_csv_id_fallbacks(header, row, expected):
    papers = parse_papers(f"{header}\n{row}\n".encode(), filename="p.csv")
    assert papers[0]["id"] == expected


def test_csv_semicolon_delimiter_and_bom():
    data = '\ufeffid;title;abstract;keywords\n1;T;A, with comma;"a; b"\n'.encode()
    [paper] = parse_papers(data, filename="excel.csv")
    assert paper["id"] == "1" and paper["abstract"] == "A, with comma"
    assert paper["keywords"] == ["a", "b"]
    # An unquoted ";" inside a field shows up as a surplus field, not as data.
    err = error_of(data.replace(b'"', b""), filename="excel.csv")
    assert "5 fields but the header has 4" in err.detail


def test_csv_keywords_split_on_semicolon():
    data = b'id,title,keywords\n1,T," Humans ;  ; Child, Preschool;"\n'
    assert parse_papers(data)[0]["keywords"] == ["Humans", "Child, Preschool"]


def test_csv_bad_year_names_row():
    data = b"id,title,year\n1,A,2001\n2,B,sometime\n"
    err = error_of(data, filename="p.csv")
    assert "CSV row 2 (line 3)" in err.detail and "sometime" in err.detail


def test_csv_without_title_or_abstract_lists_expected_columns():
    err = error_of(b"name,summary\nx,y\n", filename="p.csv")
    assert "id, title, abstract, keywords, year, doi" in err.detail
    assert "'name'" in err.detail


def test_csv_extra_fields_and_bad_quoting():
    assert "3 fields" in error_of(b"id,title\n1,A,surprise\n", filename="p.csv").detail
    assert parse_papers(b"id,title\n1,A,\n", filename="p.csv")[0]["title"] == "A"
    assert "CSV line" in error_of(b'id,title\n1,"A"B\n', filename="p.csv").detail


def test_csv_header_only_is_empty():
    assert "no data rows" in error_of(b"id,title,abstract\n\n", filename="p.csv").detail


# --------------------------------------------------------------------------
# JSON Lines / JSON


def test_jsonl_fixture():
    papers = parse_papers(fixture("papers.jsonl"), filename="papers.jsonl")
    assert [p["id"] for p in papers] == [
        "pmid:10746617",
        "pmid:10830342",
        "pmid:10214771",
    ]
    assert papers[2]["abstract"] == ""  # null
    assert papers[0]["year"] == 2000 and papers[1]["year"] is None
    assert parse_papers(fixture("papers.jsonl")) == papers  # sniffed


def test_jsonl_errors_name_the_line():
    data = b'{"id": "a", "title": "A"}\n\n{"id": "b", "title": \n'
    assert "line 3: invalid JSON" in error_of(data, filename="p.jsonl").detail
    data = b'{"id": "a"}\n{"title": "no id"}\n'
    assert "line 2: missing 'id'" in error_of(data, filename="p.jsonl").detail
    data = b'{"id": "a"}\n[1, 2]\n'
    assert "line 2: expected a JSON object" in error_of(data, filename="p.jsonl").detail
    data = b'{"id": "a", "keywords": "x", "year": true}\n'
    assert "line 1: year" in error_of(data, filename="p.jsonl").detail


def test_json_documents():
    papers = [{"id": 1, "title": "A"}, {"id": "2", "title": "B", "keywords": ["k"]}]
    as_array = parse_papers(json.dumps(papers).encode(), filename="p.json")
    assert [p["id"] for p in as_array] == ["1", "2"]  # ints become strings
    body = json.dumps({"papers": papers}, indent=2).encode()
    assert parse_papers(body, content_type="application/json") == as_array
    assert parse_papers(json.dumps(papers).encode()) == as_array  # sniffed "["


def test_normalize_papers_for_json_bodies():
    papers = normalize_papers([{"id": " a ", "title": None, "keywords": None}])
    assert papers == [
        {
            "id": "a",
            "title": "",
            "abstract": "",
            "keywords": [],
            "year": None,
            "doi": None,
        }
    ]
    with pytest.raises(ValidationError) as info:
        normalize_papers([{"id": "a"}, {"id": "a"}])
    assert info.value.errors["papers"][0].startswith("duplicate paper id 'a'")

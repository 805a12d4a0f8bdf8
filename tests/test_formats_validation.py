"""Refusing bad input files (`crystallise.formats`): duplicate and blank ids, size limits, files that are not
text or not UTF-8, empty files, XML, misspelt fields.

The fixture files are described in tests/test_formats_import.py.
"""

from __future__ import annotations

import pytest

from crystallise.errors import PayloadTooLarge, ValidationError
from crystallise.formats import decode_text, iter_papers, parse_papers
from tests.formats_support import error_of, fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------
# Common validation


def test_duplicate_ids_are_listed_up_to_ten():
    rows = "".join(f"dup{i % 12},T{i}\n" for i in range(30))
    err = error_of(f"id,title\n{rows}".encode(), filename="p.csv")
    assert err.status_code == 400
    assert "12 paper id(s) occur more than once" in err.detail
    listed = err.errors["papers_file"]
    assert len(listed) == 11 and listed[-1] == "... and 2 more duplicate id(s)"
    assert listed[0].startswith(
        "duplicate paper id 'dup0' (CSV row 1 (line 2), CSV row 13"
    )
    body = err.as_body()
    assert body["error_category"] == "validation" and "errors" in body


def test_blank_id_is_rejected():
    data = b'{"id": "  ", "title": "A"}\n'
    assert "missing paper id" in error_of(data, filename="p.jsonl").detail


def test_max_records_stops_early():
    # Row 6 is broken: hitting it would mean the limit was checked too late.
    rows = [f"{i},T{i},2001" for i in range(5)] + ["bad,T,not a year"]
    rows += [f"x{i},T,2001" for i in range(10_000)]
    data = ("id,title,year\n" + "\n".join(rows)).encode()
    err = error_of(data, filename="p.csv", max_records=5)
    assert "more than 5" in err.detail
    assert len(parse_papers(data[: data.index(b"bad")], max_records=5)) == 5


def test_iter_papers_raises_file_errors_before_iterating():
    with pytest.raises(ValidationError):
        iter_papers(b"")
    stream = iter_papers(fixture("papers.csv"), filename="papers.csv")
    assert next(stream)["id"] == "pmid:12090443"


def test_max_bytes_is_payload_too_large():
    with pytest.raises(PayloadTooLarge) as info:
        parse_papers(fixture("papers.csv"), max_bytes=100)
    assert info.value.status_code == 413
    assert info.value.as_body()["error_category"] == "validation"


# --------------------------------------------------------------------------
# Not text, bad text


def test_png_renamed_to_ris():
    data = PNG_MAGIC + bytes(range(256)) * 4
    err = error_of(data, filename="papers.ris")
    assert err.detail == "not a text file (looks like PNG)"
    assert err.errors == {"papers_file": ["not a text file (looks like PNG)"]}


def test_binary_without_magic():
    data = bytes(range(32)) * 100
    assert error_of(data, filename="p.csv").detail.startswith("not a text file")


def test_utf16_is_rejected_with_advice():
    data = "id,title\n1,A\n".encode("utf-16")
    assert "UTF-16" in error_of(data).detail


def test_nul_byte_offset():
    data = b"id,title\n1,A\x00B\n"
    err = error_of(data, filename="p.csv")
    assert "NUL byte at offset 12" in err.detail


def test_invalid_utf8_names_offset_and_line():
    data = b"id,title\n1,Caf\xe9\n"  # Latin-1 "é"
    err = error_of(data, filename="p.csv")
    assert "not valid UTF-8" in err.detail
    assert "byte 0xE9 at offset 14 (line 2)" in err.detail
    # The offset counts the BOM, so it matches what a hex editor shows.
    assert "offset 17" in error_of(b"\xef\xbb\xbf" + data, filename="p.csv").detail


def test_bom_is_tolerated():
    assert decode_text(b"\xef\xbb\xbfTY  - JOUR\n") == "TY  - JOUR\n"
    data = b"\xef\xbb\xbf" + fixture("papers.nbib")
    assert len(parse_papers(data)) == 3


@pytest.mark.parametrize("data", [b"", b"  \n\r\n\t", b"\xef\xbb\xbf"])
def test_empty_file(data):
    assert error_of(data, filename="p.ris").detail == "the file is empty"


def test_xml_is_rejected():
    data = b'<?xml version="1.0"?>\n<PubmedArticleSet></PubmedArticleSet>\n'
    assert "XML" in error_of(data, filename="pubmed.xml").detail


@pytest.mark.parametrize(("name", "content", "message"), [
    ("papers.csv", "id,title,abstarct\n1,T,A randomized trial\n", "CSV column 'abstarct' looks like a misspelling of 'abstract'"),
    ("papers.jsonl", '{"id": "j1", "title": "T", "abstarct": "typo"}\n', "line 1: field 'abstarct' looks like a misspelling of 'abstract'"),
    ("papers.json", '[{"id": "j1", "titel": "T", "abstract": "A"}]', "field 'titel' looks like a misspelling of 'title'"),
])
def test_a_misspelt_field_in_a_file_is_refused_not_dropped(name, content, message):
    with pytest.raises(ValidationError) as info:
        parse_papers(content.encode(), filename=name)
    assert message in info.value.detail


def test_extra_columns_and_keys_that_are_not_typos_are_ignored():
    csv_text = "id,title,abstract,authors,journal,label_included\n1,T,A trial,Doe J,Lancet,1\n"
    assert parse_papers(csv_text.encode(), filename="p.csv")[0]["abstract"] == "A trial"
    jsonl = '{"id": "1", "title": "T", "abstract": "A trial", "authors": ["Doe J"], "uid": 5}\n'
    assert parse_papers(jsonl.encode(), filename="p.jsonl")[0]["title"] == "T"

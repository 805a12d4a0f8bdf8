"""Bibliographic record import (RIS, PubMed/MEDLINE, CSV, JSON Lines) and export.

`parse_papers` turns an uploaded file into the contract's paper dicts
(``{"id", "title", "abstract", "keywords", "year", "doi"}``) or raises
`ValidationError` (`PayloadTooLarge` for `max_bytes`) with a sentence that
names the offending record, line or byte. Exporters live in the format
modules: `ris.dump_ris`, `csvfile.dump_csv`, `jsonl.dump_jsonl`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

from crystallise.errors import PayloadTooLarge

from . import csvfile, jsonl, medline, ris
from .common import (
    DEFAULT_FIELD,
    MAX_ABSTRACT_CHARS,
    MAX_TITLE_CHARS,
    PAPER_FIELDS,
    invalid,
    item_error,
    normalize_papers,
    validate_stream,
)

__all__ = [
    "FORMATS",
    "MAX_ABSTRACT_CHARS",
    "MAX_TITLE_CHARS",
    "PAPER_FIELDS",
    "decode_text",
    "detect_format",
    "item_error",
    "iter_papers",
    "normalize_papers",
    "parse_papers",
]

FORMATS = ("ris", "medline", "csv", "jsonl", "json")

_READERS = {
    "ris": (
        ris.iter_records,
        "no RIS records found (expected records starting 'TY  - ')",
    ),
    "medline": (medline.iter_records, "no PubMed/MEDLINE records found"),
    "csv": (csvfile.iter_records, "the CSV file has no data rows"),
    "jsonl": (jsonl.iter_records, "the JSON Lines file has no records"),
    "json": (jsonl.iter_document_records, "the JSON file has no papers"),
}

_EXTENSIONS = {
    ".ris": "ris",
    ".nbib": "medline",
    ".medline": "medline",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    # ".txt" is deliberately absent: PubMed saves its format as .txt, and so
    # do some RIS exporters, so the content decides.
}

_CONTENT_TYPES = {
    "application/x-research-info-systems": "ris",
    "application/x-ris": "ris",
    "application/nbib": "medline",
    "application/x-nbib": "medline",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/json": "json",
}

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF-", "PDF"),
    (b"PK\x03\x04", "a ZIP archive, e.g. an Excel .xlsx or Word .docx"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file, e.g. Excel .xls"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!\x1a\x07", "RAR"),
    (b"SQLite format 3\x00", "SQLite"),
)
_SAMPLE = 8192
# Share of control bytes (other than tab/newline/form feed/CR) in the first
# 8 KiB above which a file is binary rather than text with a stray byte.
_BINARY_RATIO = 0.10
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13} | {127}


def decode_text(
    data: bytes | bytearray | memoryview | str, *, field: str = DEFAULT_FIELD
) -> str:
    """UTF-8 text of an upload (BOM dropped), or a ValidationError saying why not."""
    if isinstance(data, str):
        text = data.removeprefix("\ufeff")
        if (nul := text.find("\x00")) >= 0:
            raise invalid(
                f"the file contains a NUL character at position {nul}", field=field
            )
        return text
    if isinstance(data, memoryview):
        data = data.tobytes()
    view = memoryview(data)
    head = bytes(view[:_SAMPLE])
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            raise invalid(f"not a text file (looks like {kind})", field=field)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise invalid("the file is UTF-16 text; save it as UTF-8", field=field)
    if head and sum(b in _CONTROL for b in head) / len(head) > _BINARY_RATIO:
        raise invalid(
            "not a text file (binary content; UTF-16 text must be saved as UTF-8)",
            field=field,
        )
    if (nul := data.find(b"\x00")) >= 0:
        raise invalid(
            f"the file contains a NUL byte at offset {nul}; it must be UTF-8 text",
            field=field,
        )
    skip = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    try:
        # str(memoryview) decodes without first copying a 256 MiB slice.
        return str(view[skip:], "utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        line = data.count(b"\n", 0, offset) + 1
        raise invalid(
            f"the file is not valid UTF-8: byte 0x{view[offset]:02X} at offset {offset} "
            f"(line {line}); save it as UTF-8",
            field=field,
        ) from None


def _sniff(text: str, field: str) -> str:
    lines = text[:65536].lstrip().splitlines()[:20]
    first = lines[0] if lines else ""
    if first.startswith("PMID-"):
        return "medline"
    if first.startswith("{"):
        return "jsonl"
    if first.startswith("["):
        return "json"
    if first.startswith("<"):
        raise invalid(
            "the file looks like XML or HTML, which is not supported; "
            "export RIS, CSV, PubMed format (.nbib/.txt) or JSON Lines",
            field=field,
        )
    # RIS exporters may put a header ("Provider: ...", "1.") before the first TY.
    if any(line.startswith("TY  -") for line in lines):
        return "ris"
    return "csv"


def detect_format(
    text: str,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    field: str = DEFAULT_FIELD,
) -> str:
    """One of FORMATS: by extension, then content type, then content."""
    if filename:
        name = filename.lower().strip()
        for extension, fmt in _EXTENSIONS.items():
            if name.endswith(extension):
                return fmt
    if content_type:
        fmt = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if fmt:
            return fmt
    return _sniff(text, field)


def iter_papers(
    data: bytes | bytearray | memoryview | str,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_records: int | None = None,
    max_bytes: int | None = None,
    fmt: str | None = None,
    field: str = DEFAULT_FIELD,
) -> Iterator[dict]:
    """Validated papers, parsed lazily.

    Problems with the file as a whole (size, encoding, binary, empty, format)
    raise here; problems with records raise while iterating, and duplicate
    ids only after the last paper, so the result is valid only once the
    iterator is exhausted without an exception.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLarge(
            f"the file is larger than the {max_bytes}-byte upload limit",
            errors={field: [f"larger than {max_bytes} bytes"]},
        )
    text = decode_text(data, field=field)
    if not text.strip():
        raise invalid("the file is empty", field=field)
    if fmt is None:
        fmt = detect_format(
            text, filename=filename, content_type=content_type, field=field
        )
    if fmt not in _READERS:
        raise invalid(
            f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", field=field
        )
    reader, empty_detail = _READERS[fmt]
    return validate_stream(
        reader(text), max_records=max_records, field=field, empty_detail=empty_detail
    )


def parse_papers(
    data: bytes | bytearray | memoryview | str,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_records: int | None = None,
    max_bytes: int | None = None,
    fmt: str | None = None,
    field: str = DEFAULT_FIELD,
) -> list[dict]:
    """All papers of an uploaded file, or a ValidationError naming the problem."""
    return list(
        iter_papers(
            data,
            filename=filename,
            content_type=content_type,
            max_records=max_records,
            max_bytes=max_bytes,
            fmt=fmt,
            field=field,
        )
    )


def parse_upload(upload, *, max_records: int, max_bytes: int, field: str) -> list[dict]:
    """All papers of an uploaded file (a Django `UploadedFile`), size checked before it is read."""
    if upload.size > max_bytes:
        mib = max_bytes / (1024 * 1024)
        raise PayloadTooLarge(
            f"{field} is larger than the upload limit ({mib:g} MiB).", errors={field: ["File too large."]}
        )
    return parse_papers(upload.read(), filename=upload.name, content_type=upload.content_type,
                        max_records=max_records, max_bytes=max_bytes, field=field)

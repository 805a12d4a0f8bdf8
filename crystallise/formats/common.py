"""Validation shared by every import format, and by JSON `papers` bodies.

Format parsers yield ``(where, raw_dict)`` pairs, where `where` is a
human location ("record 3 (line 17)", "line 4", "papers[2]"); everything
here turns those into the contract's paper dicts or a ValidationError that
names the location, so the rules cannot drift between formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from crystallise.errors import ValidationError

PAPER_FIELDS = ("id", "title", "abstract", "keywords", "year", "doi")
MAX_ID_LENGTH = 255
# Longest title and abstract accepted in a JSON body (screening papers, indexer records).
MAX_TITLE_CHARS = 2_000
MAX_ABSTRACT_CHARS = 20_000
MAX_DUPLICATES_LISTED = 10
DEFAULT_FIELD = "papers_file"

# A year is the first four digits of the value, so "2004///" (RIS),
# "2004 Jan 15" (MEDLINE), "2004-05-01" and "2004.0" (spreadsheets) all work.
_YEAR_RE = re.compile(r"^\s*(\d{4})(?!\d)")
_DOI_PREFIX_RE = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)", re.IGNORECASE)


def invalid(
    detail: str, *, field: str = DEFAULT_FIELD, errors: list[str] | None = None
):
    """The ValidationError every format raises for a bad file."""
    return ValidationError(detail, errors={field: errors or [detail]})


def iter_lines(text: str) -> Iterator[str]:
    """Yield lines with their endings, without copying the whole text again.

    Uploads can be 256 MiB; `splitlines()` or a StringIO would double that.
    """
    pos, end = 0, len(text)
    while pos < end:
        nl = text.find("\n", pos)
        if nl < 0:
            yield text[pos:]
            return
        yield text[pos : nl + 1]
        pos = nl + 1


def split_keywords(value: str) -> list[str]:
    # Only ";": MeSH headings such as "Analgesics, Opioid" contain commas.
    return [part.strip() for part in value.split(";") if part.strip()]


def parse_year(value: Any) -> int | None:
    """An int year, None when blank; ValueError/TypeError when not a year."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"year must be a number, not {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if not 1000 <= value <= 9999:
            raise ValueError(f"year {value} is not a four-digit year")
        return value
    if isinstance(value, str):
        if not value.strip():
            return None
        match = _YEAR_RE.match(value)
        if match:
            return int(match.group(1))
        raise ValueError(f"year {value.strip()[:40]!r} is not a year")
    if isinstance(value, float):
        raise ValueError(f"year {value!r} is not a whole four-digit year")
    raise TypeError(f"year must be a four-digit number or string, not {type(value).__name__}")


def find_year(value: Any) -> int | None:
    """Lenient variant for reference-manager dates ("In press", "n.d.")."""
    try:
        return parse_year(value)
    except (TypeError, ValueError):
        return None


def normalize_doi(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"doi must be a string, not {type(value).__name__}")
    doi = _DOI_PREFIX_RE.sub("", value.strip()).strip()
    return doi or None


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{name} must be a string, not {type(value).__name__}")


def _keywords(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return split_keywords(value)
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise TypeError("keywords must be a list of strings")
            text = str(item).strip()
            if text:
                out.append(text)
        return out
    raise TypeError("keywords must be a list of strings")


def _paper_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if value is None:
            raise ValueError("missing paper id")
        raise TypeError(f"id must be a string, not {type(value).__name__}")
    paper_id = str(value).strip()
    if "\x00" in paper_id:
        # PostgreSQL text cannot hold NUL: a 400 here rather than a failed INSERT (a 500).
        raise ValueError("id contains a NUL character")
    if not paper_id:
        raise ValueError("missing paper id")
    if len(paper_id) > MAX_ID_LENGTH:
        raise ValueError(f"id is longer than {MAX_ID_LENGTH} characters")
    return paper_id


def normalize_paper(
    raw: Mapping[str, Any], *, where: str, field: str = DEFAULT_FIELD
) -> dict:
    """One raw record as the contract's paper dict, or a ValidationError."""
    try:
        return {
            "id": _paper_id(raw.get("id")),
            "title": _text(raw.get("title"), "title"),
            "abstract": _text(raw.get("abstract"), "abstract"),
            "keywords": _keywords(raw.get("keywords")),
            "year": parse_year(raw.get("year")),
            "doi": normalize_doi(raw.get("doi")),
        }
    except (TypeError, ValueError) as exc:
        raise invalid(f"{where}: {exc}", field=field) from None


def _one_edit_apart(a: str, b: str) -> bool:
    """True when `a` becomes `b` by one insertion, deletion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def misspelt_field(name: str) -> str | None:
    """The paper field `name` is one typo away from ("abstarct" → "abstract"), else None.

    Files may carry columns and keys the service does not use, and those are ignored; but
    one that is a typo of a field it does use would silently drop that field's data.
    """
    key = re.sub(r"[\s_-]+", "_", str(name).strip().lower())
    if len(key) < 4 or key in PAPER_FIELDS:
        return None
    return next((known for known in PAPER_FIELDS if _one_edit_apart(key, known)), None)


def validate_stream(
    records: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    max_records: int | None = None,
    field: str = DEFAULT_FIELD,
    empty_detail: str = "the file contains no papers",
    keyed_by_item: bool = False,
) -> Iterator[dict]:
    """Normalise records lazily; stop as soon as `max_records` is exceeded.

    `keyed_by_item`: a problem with one record is keyed by its location (`papers[3]`, a JSON
    list item) rather than by `field` (a file, whose locations are lines and records).

    Duplicate ids and an empty input can only be known at the end, so they
    raise after the last paper has been yielded: a consumer must treat the
    stream as valid only once it is exhausted without an exception.
    """
    first_seen: dict[str, str] = {}
    duplicates: dict[str, list[str]] = {}
    count = 0
    checked_keys: set[str] = set()
    for where, raw in records:
        count += 1
        item_field = where if keyed_by_item else field
        for key in raw.keys() - checked_keys:
            if (known := misspelt_field(key)) is not None:
                raise invalid(f"{where}: field {key!r} looks like a misspelling of {known!r}; rename it",
                              field=item_field)
            checked_keys.add(key)
        if max_records is not None and count > max_records:
            raise invalid(
                f"too many papers: more than {max_records} (the limit per job)",
                field=field,
            )
        paper = normalize_paper(raw, where=where, field=item_field)
        if paper["id"] in first_seen:
            duplicates.setdefault(paper["id"], [first_seen[paper["id"]]]).append(where)
        else:
            first_seen[paper["id"]] = where
        yield paper
    if duplicates:
        raise duplicate_error(duplicates, field=field)
    if count == 0:
        raise invalid(empty_detail, field=field)


def duplicate_error(duplicates: Mapping[str, list[str]], *, field: str = DEFAULT_FIELD):
    listed = [
        f"duplicate paper id {paper_id!r} ({', '.join(places[:5])})"
        for paper_id, places in list(duplicates.items())[:MAX_DUPLICATES_LISTED]
    ]
    more = len(duplicates) - len(listed)
    detail = f"{len(duplicates)} paper id(s) occur more than once: " + ", ".join(
        repr(paper_id) for paper_id in list(duplicates)[:MAX_DUPLICATES_LISTED]
    )
    if more > 0:
        detail += f" and {more} more"
        listed.append(f"... and {more} more duplicate id(s)")
    return ValidationError(detail, errors={field: listed})


def normalize_papers(
    papers: Iterable[Mapping[str, Any]],
    *,
    max_records: int | None = None,
    field: str = "papers",
) -> list[dict]:
    """Validate a JSON `papers` list with the same rules as uploaded files."""

    noun = "record" if field == "records" else "paper"

    def located() -> Iterator[tuple[str, Mapping[str, Any]]]:
        for index, item in enumerate(papers):
            where = f"{field}[{index}]"
            if not isinstance(item, Mapping):
                raise invalid(f"{where}: each paper must be an object", field=where)
            # A JSON body is strict: a misspelt key ("abstarct") would otherwise drop data silently.
            unknown = [key for key in item if key not in PAPER_FIELDS]
            if unknown:
                raise invalid(f"{where}: unknown field {unknown[0]!r} (a {noun} has {', '.join(PAPER_FIELDS)})",
                              field=where)
            yield where, item

    return list(
        validate_stream(
            located(),
            max_records=max_records,
            field=field,
            empty_detail=f"{field} is empty",
            keyed_by_item=True,
        )
    )


def item_error(field: str, index: int, detail: str) -> ValidationError:
    """A problem with one item of a JSON list (`papers[3]`), keyed by the item."""
    return ValidationError(f"{field}[{index}]{detail}", errors={f"{field}[{index}]": [f"{field}[{index}]{detail}"]})


def one_line(value: Any) -> str:
    """Collapse line breaks so a value cannot start a fake tag or row."""
    if value is None:
        return ""
    return " ".join(str(value).split())

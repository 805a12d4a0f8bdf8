"""JSON Lines import/export, plus a whole-document JSON import for `.json`.

JSONL: one paper object per line (``id`` required, other paper fields
optional); blank lines are skipped. A `.json` upload may also be an array of
papers or the API body shape ``{"papers": [...]}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .common import invalid, iter_lines

CONTENT_TYPE = "application/x-ndjson"


def _require_id(where: str, obj: Mapping[str, Any]) -> None:
    # No positional fallback as in RIS/CSV: a JSON producer can always send
    # ids, and a silent "line 7" id would not survive re-exports.
    if obj.get("id") is None:
        raise invalid(f"{where}: missing 'id'")


def iter_records(text: str) -> Iterator[tuple[str, dict]]:
    """Yield ``(where, raw paper)`` per non-blank line of JSONL `text`."""
    for number, line in enumerate(iter_lines(text), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise invalid(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise invalid(f"{where}: expected a JSON object, got {type(obj).__name__}")
        _require_id(where, obj)
        yield where, obj


def iter_document_records(text: str) -> Iterator[tuple[str, dict]]:
    """A `.json` file: an array, ``{"papers": [...]}``, one object, or JSONL."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # Several top-level values: JSON Lines under a .json name.
            yield from iter_records(text)
            return
        raise invalid(
            f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if isinstance(doc, dict) and isinstance(doc.get("papers"), list):
        items, label = doc["papers"], "papers"
    elif isinstance(doc, list):
        items, label = doc, "item"
    elif isinstance(doc, dict):
        items, label = [doc], "item"
    else:
        raise invalid('expected a JSON array of papers or {"papers": [...]}')
    for index, obj in enumerate(items):
        where = f"{label}[{index}]"
        if not isinstance(obj, dict):
            raise invalid(f"{where}: expected a JSON object, got {type(obj).__name__}")
        _require_id(where, obj)
        yield where, obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)  # UUID and the like


def dump_jsonl(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Stream one JSON object per line."""
    for row in rows:
        line = json.dumps(_jsonable(row), ensure_ascii=False)
        # Legal raw in JSON strings, but str.splitlines() (and some JSONL
        # readers) treat them as line breaks.
        yield line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"

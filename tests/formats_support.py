"""Helpers shared by the import/export tests of `crystallise.formats`: fixture files and parse errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crystallise.errors import ValidationError
from crystallise.formats import parse_papers

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def error_of(data, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_papers(data, **kwargs)
    return info.value

"""What the shell commands check the same way (the job commands' options, the admin's field rules)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


def concurrency(value: str) -> int:
    """argparse type of --concurrency: most LLM calls in flight, 1–4096 (as CRYSTALLISE_LLM_CONCURRENCY)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 4096:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 4096, not {value!r}")
    return number


def writable(path: Path) -> Path:
    """An output file that can be written, checked before a job runs (and is billed), not after."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CommandError(f"Cannot write results to {path}: it is a directory.")
    if not folder.is_dir():
        raise CommandError(f"Cannot write results to {path}: no directory {folder}.")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CommandError(f"Cannot write results to {path}: permission denied.")
    return path


def full_clean(instance, *, what: str, exclude: list[str]) -> None:
    """The model's own field rules (the admin's), failing as one CommandError line: 'Cannot create <what>: field: …'."""
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
        raise CommandError(f"Cannot create {what}: {problems}") from None

"""A batch-mode job's record of its provider batches (`BaseJob.batches`, a JSON list).

Each entry is one batch: its input file, the batch id once created, the provider's status and
request counts, its output and error files, which items it holds (position runs), its round
(1 for an item's first batch, 2 for its first resubmission...) and whether its lines have been
collected. The entry is written before each provider call that creates something, so a restart
finds what exists (an uploaded file, a created batch) and never submits it twice.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from crystallise.errors import Category, LLMError


def custom_id(position: int) -> str:
    return f"p{position}"


def position_of(custom: str) -> int | None:
    if custom[:1] != "p" or not custom[1:].isdigit():
        return None
    return int(custom[1:])


def runs_of(positions: Iterable[int]) -> list[list[int]]:
    """Sorted positions as [first, last] runs (a first batch is one run; a resubmission a few)."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return runs


class Runs:
    """Membership of positions in an entry's runs, by binary search."""

    def __init__(self, runs: list[list[int]]) -> None:
        self.starts = [a for a, _ in runs]
        self.ends = [b for _, b in runs]

    def __contains__(self, position: int) -> bool:
        return self.end_of(position) >= 0

    def end_of(self, position: int) -> int:
        """The last position of the run holding `position`, or -1 when no run holds it."""
        i = bisect.bisect_right(self.starts, position) - 1
        return self.ends[i] if i >= 0 and position <= self.ends[i] else -1

    def positions(self) -> Iterable[int]:
        for a, b in zip(self.starts, self.ends, strict=True):
            yield from range(a, b + 1)


def is_open(entry: dict) -> bool:
    """Not yet collected: its items are in flight (or their answers not yet stored)."""
    return not entry.get("collected")


def public(entry: dict) -> dict:
    """What the API shows of one batch."""
    return {"id": entry.get("id"), "status": entry.get("status"), "round": entry.get("round", 1),
            "request_counts": entry.get("counts") or {"total": entry.get("requests", 0), "completed": 0, "failed": 0},
            "error": entry.get("error")}


class Book:
    """The entries of one job, and the questions the lane asks about them."""

    def __init__(self, entries: list[dict] | None) -> None:
        self.entries = [dict(e) for e in (entries or [])]

    def open(self) -> list[dict]:
        return [e for e in self.entries if is_open(e)]

    def open_runs(self) -> list[Runs]:
        return [Runs(e["runs"]) for e in self.open()]

    def enqueued_tokens(self) -> int:
        """Tokens waiting in the provider's queue for this job (batches not yet ended)."""
        return sum(e.get("tokens", 0) for e in self.open() if e.get("status") not in ("completed", "expired",
                                                                                      "failed", "cancelled"))

    def tries(self, exclude: dict | None = None) -> dict[int, int]:
        """Per position, how many collected batches held it (its tries so far)."""
        counts: dict[int, int] = {}
        for entry in self.entries:
            if entry is exclude or is_open(entry):
                continue
            for position in Runs(entry["runs"]).positions():
                counts[position] = counts.get(position, 0) + 1
        return counts


def refused_lines(entry: dict, state) -> dict[int, LLMError]:
    """The items whose input lines a failed batch named as invalid: a permanent error each."""
    if state.status != "failed":
        return {}
    out = {}
    positions = list(Runs(entry["runs"]).positions())
    for text in state.errors:
        if "(line " in text:
            try:
                line = int(text.rsplit("(line ", 1)[1].rstrip(")"))
            except ValueError:
                continue
            if 1 <= line <= len(positions):
                out[positions[line - 1]] = LLMError(f"The batch refused this request: {text}"[:500],
                                                    category=Category.VALIDATION, permanent=True)
    return out


def unanswered(entry: dict) -> LLMError:
    """Why an item of an ended batch has no answer (transient: it can go into a new batch)."""
    status = entry.get("status")
    if status == "failed":
        detail = f"The batch failed at validation: {entry.get('error') or 'no reason given'}."
        category = Category.RATE_LIMIT if "token" in (entry.get("error") or "") else Category.UPSTREAM
    else:
        detail = f"The batch ended ({status}) without answering this paper."
        category = Category.UPSTREAM
    return LLMError(detail[:500], category=category, permanent=False)

"""Counters shared by every process: accumulated in memory, added to one database row per series.

Web and worker processes are separate (and, with Docker, separate
containers), so the counters live where they all meet: the database. Each
process adds to an in-memory tally (no I/O on the hot path); the tally is
added to the rows in one transaction, one upsert per series
(`value = value + n`): every FLUSH_SECONDS while a job runs on a worker and
when the run ends (the task wrappers), and after each web request that made
LLM calls. A failed flush (database down) keeps the tally for the next one.
What a process killed with SIGKILL had not flushed (under FLUSH_SECONDS'
worth) is lost; counters never go down. Rows are few: one per series
(name and label values), not per event.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.signals import request_finished
from django.db import DatabaseError, connection, models, transaction

from crystallise.background import every

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0


class MetricCounter(models.Model):
    """One monotonic series: a metric name and its label values (canonical JSON)."""

    name = models.CharField(max_length=100)
    labels = models.CharField(max_length=500)
    value = models.FloatField(default=0)

    class Meta:
        app_label = "crystallise"
        constraints = [models.UniqueConstraint(fields=["name", "labels"], name="metric_counter_series")]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value}"

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(json.loads(self.labels))


def series_labels(labels: dict[str, object]) -> str:
    return _labels_json(tuple(sorted((k, "" if v is None else str(v)) for k, v in labels.items())))


@functools.lru_cache(maxsize=4096)
def _labels_json(items: tuple[tuple[str, str], ...]) -> str:
    # A handful of distinct series, counted on every provider call: encode each once.
    return json.dumps(items, separators=(",", ":"))


class Tally:
    """This process's counts not yet added to the database; thread-safe, fork-aware."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], float] = {}
        self._pid = os.getpid()

    def add(self, name: str, labels: dict[str, object], amount: float = 1.0) -> None:
        if not amount:
            return
        key = (name, series_labels(labels))
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's tally is not ours to write
                self._pending, self._pid = {}, os.getpid()
            self._pending[key] = self._pending.get(key, 0.0) + amount

    def pending(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._pending)

    def flush(self) -> bool:
        """Add the tally to the database now (this thread's connection). False, tally kept, if the database failed."""
        with self._lock:
            if self._pid != os.getpid():
                self._pending, self._pid = {}, os.getpid()
            batch, self._pending = self._pending, {}
        if not batch:
            return True
        table = connection.ops.quote_name(MetricCounter._meta.db_table)
        sql = (f"INSERT INTO {table} (name, labels, value) VALUES (%s, %s, %s) "
               f"ON CONFLICT (name, labels) DO UPDATE SET value = {table}.value + excluded.value")
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, [(name, labels, value) for (name, labels), value in sorted(batch.items())])
        except DatabaseError:
            with self._lock:
                for key, value in batch.items():
                    self._pending[key] = self._pending.get(key, 0.0) + value
            logger.warning("Could not write %d metric series; kept for the next flush.", len(batch))
            return False
        return True


TALLY = Tally()


@contextmanager
def flushing_every(seconds: float = FLUSH_SECONDS) -> Iterator[None]:
    """While the block runs (a job), flush every `seconds` from a helper thread; flush once more at the end."""
    try:
        with every(seconds, TALLY.flush, name="metrics-flush"):
            yield
    finally:
        TALLY.flush()


def _flush_after_request(**kwargs) -> None:
    # After the response has been sent (WSGI close): a synchronous LLM endpoint's calls
    # reach the shared counters without adding to that request's latency.
    if TALLY.pending():
        TALLY.flush()


request_finished.connect(_flush_after_request, dispatch_uid="crystallise-metrics-flush")

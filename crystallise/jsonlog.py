"""Structured logs: the job a line belongs to, and one JSON object per line.

`job_context(job_id)` marks everything logged while a job runs (the task
wrappers in `screening.tasks` and `indexer.tasks` set it). The context
variable follows the job's asyncio tasks; the runner's database and
heartbeat threads do not inherit context variables, so their lines are
matched by the thread's name, which carries the job id.

With CRYSTALLISE_LOG_FORMAT=json the console handler writes one JSON object
per line: `time`, `level`, `logger`, `message`, `job_id` (when there is one),
`process`, and `exception` for tracebacks. The redacting filter runs before
the formatter, and the formatted line is redacted once more.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from crystallise.logs import redact

current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("crystallise_job_id", default=None)

# The runner names its per-job threads "job-<id>…" (database) and "heartbeat-<id>".
_THREAD_JOB = re.compile(r"^(?:job|heartbeat)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


@contextmanager
def job_context(job_id) -> Iterator[None]:
    """Every line logged inside (this thread and the asyncio tasks it starts) carries `job_id`."""
    token = current_job_id.set(str(job_id))
    try:
        yield
    finally:
        current_job_id.reset(token)


def job_id_of_this_line() -> str | None:
    job_id = current_job_id.get()
    if job_id is None:
        match = _THREAD_JOB.match(threading.current_thread().name)
        job_id = match.group(1) if match else None
    return job_id


class JobContextFilter(logging.Filter):
    """Adds `record.job_id` (None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_of_this_line()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or job_id_of_this_line()
        if job_id:
            entry["job_id"] = job_id
        entry["process"] = record.process
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines: one record is always one line.
        return redact(json.dumps(entry, ensure_ascii=False, default=str))

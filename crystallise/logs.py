"""Log hygiene: secrets never reach a log line."""

from __future__ import annotations

import logging
import re

# OpenAI keys (sk-..., sk-proj-...), our own service keys (cry_...) and
# bearer tokens in echoed headers.
SECRET_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-*.]{4,}|cry_[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-.]{8,})")


def redact(text: str) -> str:
    return SECRET_PATTERN.sub("[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks print the exception text; redact it through exc_text.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
            record.exc_info = None
        return True

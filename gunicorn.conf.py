"""gunicorn settings, read from the working directory (the Docker image runs it there).

The worker timeout stays above CRYSTALLISE_SYNC_TIMEOUT (25 s by default), the time limit of the
synchronous LLM endpoints, so they always answer in JSON instead of being killed mid-request.
"""

import math
import os

try:
    _sync = float(os.environ.get("CRYSTALLISE_SYNC_TIMEOUT") or 25)
except ValueError:  # the settings refuse it with a clear message when the app loads
    _sync = 25.0
timeout = max(60, math.ceil(_sync) + 30) if math.isfinite(_sync) else 60


def on_starting(server):
    """Load the settings once in the master: a bad variable stops gunicorn with one line, before any worker."""
    import sys

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crystallise_site.settings.base")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - reading it loads the settings
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"Configuration error: {exc}\n")
        sys.stderr.flush()
        os._exit(1)


# CRYSTALLISE_LOG_FORMAT=json: gunicorn's own lines (start, worker boot and exit) in the same JSON
# shape as the service's (crystallise.jsonlog), so every line of the web process is one JSON object.
if (os.environ.get("CRYSTALLISE_LOG_FORMAT") or "").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "crystallise.jsonlog.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }

"""Test settings: base settings with a fixed secret and fast, quiet defaults.

DATABASE_URL decides the database as everywhere (CI sets PostgreSQL); without
it the tests use an SQLite file, so real worker subprocesses can share it.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")

from .base import *  # noqa: E402,F403
from .base import DATABASES  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CRYSTALLISE_API_KEYS = []
# Worker processes a test starts (tests/workers.py) reach its fake OpenAI server through these.
CRYSTALLISE_OPENAI_API_KEY = os.environ.get("CRYSTALLISE_TEST_OPENAI_API_KEY", "")
CRYSTALLISE_OPENAI_BASE_URL = os.environ.get("CRYSTALLISE_TEST_OPENAI_BASE_URL") or None
CRYSTALLISE_LLM_BACKEND = "openai"
CRYSTALLISE_LLM_BACKOFF = 0.01
CRYSTALLISE_CALLBACK_BACKOFF = 0.01
CRYSTALLISE_LLM_TIMEOUT = 5.0
# Jobs run inside the test process: leave its priority alone (worker processes set it).
CRYSTALLISE_WORKER_NICE = 0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file (not :memory:) so real worker subprocesses can share it; one per
    # test process so parallel runs do not collide.
    import tempfile

    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"crystallise-test-{os.getpid()}.sqlite3")}
Q_CLUSTER = {**Q_CLUSTER, "poll": 0.05}  # noqa: F405
CRYSTALLISE_JOB_STALE_SECONDS = 60
# Per-key limits off: the whole suite (and its fuzzing) uses one service key from one process;
# tests/test_ops_abuse.py turns each limit on where it checks it.
CRYSTALLISE_RATE_LIMIT_PER_MINUTE = 0
CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE = 0
CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY = 0

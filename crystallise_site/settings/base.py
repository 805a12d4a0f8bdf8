"""Settings. The environment is read in this package and nowhere else (django-environ; readers in env.py).

Every variable is documented in `.env.example`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from crystallise.llm.backends import BACKENDS
from crystallise_site.settings.env import env, env_bool, env_float_between, env_int_between, env_list, env_text

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# A local .env is a convenience for `make run`; the process environment wins.
env.read_env(BASE_DIR / ".env", overwrite=False)


DEBUG = env_bool("DJANGO_DEBUG", default=False)
# Production has no default secret: without DJANGO_SECRET_KEY only a debug
# (local) process may start, with a key that changes every restart.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it (see .env.example), or set "
            "DJANGO_DEBUG=true for a local run."
        )
    SECRET_KEY = "insecure-local-only-" + "x" * 40
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# TLS is terminated by the proxy in front of us.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int_between("DJANGO_SECURE_HSTS_SECONDS", 0, 0, 10 * 365 * 86400)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    # Django's admin, with the operators' site (adds /admin/costs/).
    "crystallise.apps.CrystalliseAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served by the service itself (no CDN, pinned)
    "django_q",
    "axes",  # admin login lockout (docs/backend-guide.md#abuse)
    "crystallise",
    "screening",
    "criteria",
    "indexer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "crystallise.middleware.reject_nul_in_query",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out admin login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

# The admin's logins go through django-axes' lockout check first (web logins only).
AUTHENTICATION_BACKENDS = [
    "crystallise.throttling.AdminLoginLockout",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "crystallise_site.urls"
WSGI_APPLICATION = "crystallise_site.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASE_URL unset → an SQLite file in the project directory.
try:
    with warnings.catch_warnings():  # django-environ's warning for an unknown scheme prints the URL, password included
        warnings.simplefilter("ignore")
        DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
except (KeyError, ValueError, ImproperlyConfigured):
    DATABASES = {"default": {}}
if not DATABASES["default"].get("ENGINE"):
    raise ImproperlyConfigured(
        "DATABASE_URL is not a database URL: use postgres://user:password@host:5432/name or sqlite:////absolute/path.db."
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker share the file: wait for locks instead of failing, and
    # let readers proceed while the worker writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Request size limits (contract): JSON bodies up to 64 MiB, files up to 256 MiB.
CRYSTALLISE_MAX_JSON_BYTES = 64 * 1024 * 1024
CRYSTALLISE_MAX_UPLOAD_BYTES = 256 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = CRYSTALLISE_MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["crystallise.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["crystallise.auth.HasApiKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON everywhere; the two job endpoints also take multipart (a file upload).
    "DEFAULT_PARSER_CLASSES": ["crystallise.parsers.LimitedJSONParser"],
    "EXCEPTION_HANDLER": "crystallise.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # `?format=` selects an export (csv, ris, jsonl), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    # Per service key (its fingerprint): request rates, and the cap on active jobs.
    "DEFAULT_THROTTLE_CLASSES": ["crystallise.throttling.ApiKeyRateThrottle", "crystallise.throttling.ActiveJobCap"],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Crystallise API",
    "DESCRIPTION": "LLM-assisted screening, criteria consolidation and auto-indexing for systematic reviews.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
    },
    "SECURITY": [{"ApiKeyAuth": []}],
    # include/exclude is one choice set wherever a decision appears (model, human, final).
    "ENUM_NAME_OVERRIDES": {"DecisionEnum": "screening.models.Decision"},
    # 429 (per-key limits) and 503 (database unavailable) on every keyed operation (crystallise.throttling).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "crystallise.throttling.document_refusals"],
}

# --- Crystallise -----------------------------------------------------------
CRYSTALLISE_API_KEYS = env_list("CRYSTALLISE_API_KEYS", default=[])
CRYSTALLISE_OPENAI_API_KEY = env.str("CRYSTALLISE_OPENAI_API_KEY", default="") or env.str(
    "OPENAI_API_KEY", default=""
)
CRYSTALLISE_OPENAI_BASE_URL = env.str("CRYSTALLISE_OPENAI_BASE_URL", default="") or None
CRYSTALLISE_LLM_BACKEND = env.str("CRYSTALLISE_LLM_BACKEND", default="openai")
if CRYSTALLISE_LLM_BACKEND not in BACKENDS:
    raise ImproperlyConfigured(f"CRYSTALLISE_LLM_BACKEND must be one of {', '.join(map(repr, BACKENDS))}.")
# The most calls in flight per job; each job keeps fewer when the provider's rate limit and latency call for fewer.
CRYSTALLISE_LLM_CONCURRENCY = env_int_between("CRYSTALLISE_LLM_CONCURRENCY", 512, 1, 4096)
CRYSTALLISE_LLM_TIMEOUT = env_float_between("CRYSTALLISE_LLM_TIMEOUT", 60.0, 0.1, 3600)
CRYSTALLISE_LLM_MAX_ATTEMPTS = env_int_between("CRYSTALLISE_LLM_MAX_ATTEMPTS", 5, 1, 20)
# Time limit (s) of a synchronous LLM endpoint (/v1/criteria/consolidate, /v1/indexer/run),
# retries included; the web server's worker timeout must stay above it (gunicorn.conf.py does so).
CRYSTALLISE_SYNC_TIMEOUT = env_float_between("CRYSTALLISE_SYNC_TIMEOUT", 25.0, 1, 600)
# Backoff base for transient LLM errors without a Retry-After (seconds).
CRYSTALLISE_LLM_BACKOFF = env_float_between("CRYSTALLISE_LLM_BACKOFF", 0.5, 0, 60)
# Key that encrypts per-request OpenAI keys on their way to a worker.
# Derived from SECRET_KEY unless set explicitly.
CRYSTALLISE_FERNET_KEY = env.str("CRYSTALLISE_FERNET_KEY", default="").strip()
if CRYSTALLISE_FERNET_KEY:
    from cryptography.fernet import Fernet

    try:
        Fernet(CRYSTALLISE_FERNET_KEY.encode())
    except ValueError:
        raise ImproperlyConfigured(
            "CRYSTALLISE_FERNET_KEY must be 32 url-safe base64-encoded bytes (make one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'), "
            "or be left unset to derive it from DJANGO_SECRET_KEY."
        ) from None
# Secret for signing job-completion callbacks (HMAC-SHA256); SECRET_KEY-derived if unset.
CRYSTALLISE_CALLBACK_SECRET = env.str("CRYSTALLISE_CALLBACK_SECRET", default="")
# Callbacks go only to public addresses unless this is set (e.g. receivers on a private network).
CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = env_bool("CRYSTALLISE_CALLBACK_ALLOW_PRIVATE", default=False)
# Wait (s) before the second delivery attempt of a callback; doubled before the third.
CRYSTALLISE_CALLBACK_BACKOFF = env_float_between("CRYSTALLISE_CALLBACK_BACKOFF", 2.0, 0, 60)
# Password given by `manage.py create_operator` (a random one is printed when unset).
CRYSTALLISE_OPERATOR_PASSWORD = env.str("CRYSTALLISE_OPERATOR_PASSWORD", default="")
# CPU niceness a worker process takes when it runs a job (0 = leave as is, up
# to 19). Screening waits on the provider, so a job loses almost no speed when
# it yields the CPU, while the web process sharing the machine keeps answering
# polls at once. See docs/backend-guide.md#performance.
CRYSTALLISE_WORKER_NICE = env_int_between("CRYSTALLISE_WORKER_NICE", 10, 0, 19)
# A running job whose heartbeat is older than this is considered orphaned.
CRYSTALLISE_JOB_STALE_SECONDS = env_int_between("CRYSTALLISE_JOB_STALE_SECONDS", 60, 5, 86400)

# --- Batch lane and flex tier (docs/backend-guide.md#batch-lane) ------------
# Seconds between two polls of a batch job's provider batches (the schedule runs every minute).
CRYSTALLISE_BATCH_POLL_SECONDS = env_int_between("CRYSTALLISE_BATCH_POLL_SECONDS", 60, 0, 86400)
# How many batches one item may go through (its first, then resubmissions of missing lines).
CRYSTALLISE_BATCH_MAX_ROUNDS = env_int_between("CRYSTALLISE_BATCH_MAX_ROUNDS", 3, 1, 20)
# Requests per batch file (the provider allows at most 50,000).
CRYSTALLISE_BATCH_MAX_REQUESTS = env_int_between("CRYSTALLISE_BATCH_MAX_REQUESTS", 50_000, 1, 50_000)
# Per-model cap on tokens waiting in batches ("gpt-5-nano=40000000,gpt-5=5000000"); unset models use
# crystallise.config.BATCH_ENQUEUED_TOKEN_LIMIT (tier 1 figures).
CRYSTALLISE_BATCH_ENQUEUED_TOKENS: dict[str, int] = {}
for _pair in env_list("CRYSTALLISE_BATCH_ENQUEUED_TOKENS", default=[]):
    _name, _, _value = _pair.partition("=")
    if not _value.strip().isdigit() or int(_value) < 1:
        raise ImproperlyConfigured(
            f"CRYSTALLISE_BATCH_ENQUEUED_TOKENS must be model=tokens pairs separated by commas, not {_pair!r}.")
    CRYSTALLISE_BATCH_ENQUEUED_TOKENS[_name.strip()] = int(_value)
# Flex-tier calls that find no capacity (429 resource unavailable) are retried this many times,
# then sent in the default tier.
CRYSTALLISE_FLEX_MAX_TRIES = env_int_between("CRYSTALLISE_FLEX_MAX_TRIES", 3, 1, 20)

# --- Abuse limits and metrics (docs/backend-guide.md#abuse, #metrics) ---------
# Requests per minute per service key and web process (0 = no limit); a POST
# (job submission, synchronous LLM call) also counts against the submit limit.
CRYSTALLISE_RATE_LIMIT_PER_MINUTE = env_int_between("CRYSTALLISE_RATE_LIMIT_PER_MINUTE", 6000, 0, 10_000_000)
CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE = env_int_between("CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE", 600, 0, 10_000_000)
# Pending + running jobs (screening and indexing) one key may have at once (0 = no cap).
CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY = env_int_between("CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY", 50, 0, 1_000_000)
# Admin logins (django-axes): this many failures for one username from one address lock
# that pair for the cool-off; a success resets the count.
CRYSTALLISE_ADMIN_LOGIN_FAILURES = env_int_between("CRYSTALLISE_ADMIN_LOGIN_FAILURES", 5, 1, 1000)
CRYSTALLISE_ADMIN_LOCKOUT_MINUTES = env_int_between("CRYSTALLISE_ADMIN_LOCKOUT_MINUTES", 15, 1, 7 * 24 * 60)
AXES_FAILURE_LIMIT = CRYSTALLISE_ADMIN_LOGIN_FAILURES
AXES_COOLOFF_TIME = timedelta(minutes=CRYSTALLISE_ADMIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "crystallise.throttling.admin_lockout_response"
# Bearer token that may read GET /metrics (staff sessions always may); empty = staff only.
CRYSTALLISE_METRICS_TOKEN = env.str("CRYSTALLISE_METRICS_TOKEN", default="").strip()
if CRYSTALLISE_METRICS_TOKEN and len(CRYSTALLISE_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("CRYSTALLISE_METRICS_TOKEN must be at least 16 characters (or unset for staff-only /metrics).")

# tiktoken reads its cache directory from the environment; the o200k_base
# file is unpacked there from the bundled copy (see crystallise.tokens).
TIKTOKEN_CACHE_DIR = env.str(
    "TIKTOKEN_CACHE_DIR", default=os.path.join(tempfile.gettempdir(), "crystallise-tiktoken")
)
os.environ.setdefault("TIKTOKEN_CACHE_DIR", TIKTOKEN_CACHE_DIR)

# --- django-q2 (ORM broker) -----------------------------------------------
# timeout < retry, so a task is never redelivered while it still runs, and
# max_attempts bounds redelivery (the default is forever). Tasks are
# idempotent anyway: a job is claimed with a conditional UPDATE.
CRYSTALLISE_TASK_TIMEOUT = env_int_between("CRYSTALLISE_TASK_TIMEOUT", 6 * 3600, 60, 7 * 86400)
Q_CLUSTER = {
    "name": "crystallise",
    "orm": "default",
    "workers": env_int_between("CRYSTALLISE_WORKERS", 2, 1, 64),
    "timeout": CRYSTALLISE_TASK_TIMEOUT,
    "retry": CRYSTALLISE_TASK_TIMEOUT + 600,
    "max_attempts": 2,
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": 0.5,
    "recycle": 50,
    "label": "Task queue",
}

LOG_LEVEL = (env_text("CRYSTALLISE_LOG_LEVEL") or "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"CRYSTALLISE_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}.")
# text (default): one readable line per record; json: one JSON object per line, with the job's id.
CRYSTALLISE_LOG_FORMAT = (env_text("CRYSTALLISE_LOG_FORMAT") or "text").lower()
if CRYSTALLISE_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"CRYSTALLISE_LOG_FORMAT must be text or json, not {CRYSTALLISE_LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "crystallise.logs.RedactSecretsFilter"},
        "job": {"()": "crystallise.jsonlog.JobContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "crystallise.jsonlog.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if CRYSTALLISE_LOG_FORMAT == "json" else "plain",
                    "filters": ["redact", "job"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},  # its start-up banner in every process and command
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}

# django-q2 keeps worker statistics in the cache; a database cache lets the
# web process see them (/healthz reports live workers).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "crystallise_cache",
    }
}

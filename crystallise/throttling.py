"""Refusing abuse: per-key request rates, a cap on active jobs per key, admin login lockout.

Per-key limits are keyed by the service key's fingerprint (`Caller.fingerprint`),
never by the secret. A refusal is `429` with `error_category: "rate_limit"`, the
contract's error shape and `Retry-After` (DRF's `Throttled`, mapped once in
`crystallise.api.exception_handler`).

Request rates are token buckets held in the web process's memory: one
dictionary lookup per request, no database write (a poll stays a read-only
request). Each web process counts on its own, so with W gunicorn workers a key
can reach at most W times the configured rate (see docs/backend-guide.md#abuse).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpResponse
from django.utils.html import escape
from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle

# Routes whose POST creates a job (url names), for the active-job cap.
JOB_CREATING_ROUTES = frozenset({"screening-jobs", "indexer-jobs"})
# Keys remembered per bucket set; the least recently used one is forgotten past this
# (a forgotten key starts again with a full bucket, i.e. it is never refused wrongly).
MAX_TRACKED_KEYS = 10_000
# How long a client at the active-job cap is asked to wait before trying again.
ACTIVE_CAP_RETRY_AFTER = 10


class TokenBuckets:
    """`rate` requests per minute per key, with bursts up to `rate`; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, rate: int, now: float | None = None) -> float:
        """Take one token for `key`. Returns 0 if allowed, else the seconds until a token is free."""
        now = time.monotonic() if now is None else now
        per_second = rate / 60.0
        with self._lock:
            tokens, stamp = self._buckets.pop(key, (float(rate), now))
            tokens = min(float(rate), tokens + (now - stamp) * per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / per_second
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > MAX_TRACKED_KEYS:
                self._buckets.popitem(last=False)
        return wait

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


REQUESTS = TokenBuckets()
SUBMISSIONS = TokenBuckets()


def _fingerprint(request) -> str | None:
    # The throttles run after authentication: an authenticated caller is a
    # `Caller`; the public schema and Swagger UI have none and are not limited.
    return getattr(request.user, "fingerprint", None)


class ApiKeyRateThrottle(BaseThrottle):
    """Every request of a key counts against CRYSTALLISE_RATE_LIMIT_PER_MINUTE; a POST (a job submission
    or a synchronous LLM call) also against CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE. 0 turns a limit off."""

    def allow_request(self, request, view) -> bool:
        key = _fingerprint(request)
        if key is None:
            return True
        limits = [(REQUESTS, settings.CRYSTALLISE_RATE_LIMIT_PER_MINUTE, "requests")]
        if request.method == "POST":
            limits.append((SUBMISSIONS, settings.CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE, "submissions (POST)"))
        for buckets, rate, what in limits:
            if rate and (wait := buckets.take(key, rate)):
                raise Throttled(
                    wait=math.ceil(wait),
                    detail=f"Too many {what} with this API key: the limit is {rate} per minute.",
                )
        return True


class ActiveJobCap(BaseThrottle):
    """A key may have at most CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY pending or running jobs (screening and
    indexing together); a POST that would start another is refused with 429 before it is read.

    Checked before the job is created, without a lock: concurrent submissions can pass the cap by at
    most the number that arrive at the same moment. A retry with an Idempotency-Key that already made
    a job is let through (it returns that job, it does not start another).
    """

    def allow_request(self, request, view) -> bool:
        cap = settings.CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY
        key = _fingerprint(request)
        if not cap or key is None or request.method != "POST":
            return True
        match = getattr(request, "resolver_match", None)
        if match is None or match.url_name not in JOB_CREATING_ROUTES:
            return True
        from crystallise.jobs.models import BaseJob

        models = BaseJob.__subclasses__()
        idempotency_key = (request.headers.get("Idempotency-Key") or "").strip()[:200]
        if idempotency_key and any(m.objects.filter(owner=key, idempotency_key=idempotency_key).exists() for m in models):
            return True
        active = sum(m.objects.owned_by(key).active().count() for m in models)
        if active >= cap:
            raise Throttled(
                wait=ACTIVE_CAP_RETRY_AFTER,
                detail=f"This API key already has {active} active jobs (pending or running); the limit is {cap}. "
                "Wait for one to finish or cancel one, then submit again.",
            )
        return True


# --- admin login (django-axes) ------------------------------------------------

class AdminLoginLockout(AxesStandaloneBackend):
    """django-axes' lockout check for logins made through a web request (the admin's login form).

    A login without a request (the shell, `Client.login()` in tests) is not a web login and has no
    client address to lock out: it is left to the next backend instead of being refused.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def admin_lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """What a locked-out admin login gets: 429, `Retry-After`, a short page (the admin is HTML)."""
    minutes = settings.CRYSTALLISE_ADMIN_LOCKOUT_MINUTES
    body = (
        "<!doctype html><title>Too many failed logins</title>"
        "<h1>Too many failed logins</h1>"
        f"<p>Logins for {escape((credentials or {}).get('username') or 'this account')} from this address are "
        f"locked for {minutes} minutes after {settings.AXES_FAILURE_LIMIT} failed attempts. "
        "An operator can lift the lock at once with <code>python manage.py axes_reset</code>.</p>"
    )
    response = HttpResponse(body, status=429, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(minutes * 60)
    return response


# --- OpenAPI -------------------------------------------------------------------


def document_refusals(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: every operation that takes a service key can answer 429 (a limit
    above) and 503 (the database is unavailable), both in the error shape."""
    error = {"$ref": "#/components/schemas/Error"}
    described = {
        "429": "A per-key limit was reached (rate_limit); wait Retry-After seconds.",
        "503": "The database is temporarily unavailable (internal); retry after Retry-After seconds.",
    }
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict) or operation.get("security") == [{}]:
                continue
            responses = operation.setdefault("responses", {})
            for code, text in described.items():
                responses.setdefault(code, {"content": {"application/json": {"schema": error}}, "description": text})
    return result

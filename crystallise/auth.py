"""Service authentication: `X-API-Key` against env keys and admin-managed keys.

Dev mode: while `CRYSTALLISE_API_KEYS` is empty and no active admin key
exists, any non-empty `X-API-Key` is accepted (a loud warning is logged at
start and `check --deploy` flags it). Creating the first admin key ends dev
mode at once, because the check runs per request.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from crystallise.errors import AuthError
from crystallise.models import ApiKey, hash_secret
from crystallise.prepared import PreparedQuery

HEADER = "HTTP_X_API_KEY"
# One query answers both "is this an admin key?" and "is any admin key active?"
# (dev mode): the matching row if there is one, else any active row.
KEY_OR_ANY_ACTIVE = PreparedQuery(lambda digest: ApiKey.objects.key_or_any_active(digest),
                                  digest=ApiKey._meta.get_field("key_hash"))
OPENAI_HEADER = "HTTP_X_OPENAI_API_KEY"


@dataclass(frozen=True)
class Caller:
    """Who made a request: never holds the secret itself."""

    label: str
    # Stable, non-reversible identity used for job ownership.
    fingerprint: str
    api_key_id: object = None
    dev_mode: bool = False

    # DRF and Django treat request.user as a user object.
    is_authenticated = True
    is_staff = False

    @property
    def pk(self):
        return self.fingerprint


# Jobs started from the shell (`screen`, `index_records`): one owner, one label in cost reports.
COMMAND_LINE = Caller(label="command line", fingerprint="cli")


def fingerprint(secret: str) -> str:
    return hashlib.sha256(b"crystallise-key:" + secret.encode()).hexdigest()[:16]


def dev_mode_active() -> bool:
    return not settings.CRYSTALLISE_API_KEYS and not ApiKey.objects.active().exists()


class KeyUsage:
    """`last_used_at` / `request_count` of admin keys, written at most every FLUSH_SECONDS per key and process.

    Writing them on every request made each poll a write transaction (a commit
    and its WAL flush). A key's first request in a process is written at once;
    later ones are counted in memory and added with the next write, or when the
    process exits. So the admin's figures lag by at most FLUSH_SECONDS per web
    process, and a process killed with SIGKILL loses at most that window's count.
    """

    FLUSH_SECONDS = 10.0

    def __init__(self):
        self._lock = threading.Lock()
        # Per key (by id and hash, so a reused id is a different key):
        # requests not yet written, when they were last written, the last request.
        self._pending: dict[tuple, int] = {}
        self._flushed_at: dict[tuple, float] = {}
        self._last_seen: dict[tuple, object] = {}
        atexit.register(self.flush_all)

    def record(self, key: ApiKey) -> None:
        ident, now, seen = (key.pk, key.key_hash), time.monotonic(), timezone.now()
        with self._lock:
            count = self._pending.get(ident, 0) + 1
            if now - self._flushed_at.get(ident, -self.FLUSH_SECONDS) < self.FLUSH_SECONDS:
                self._pending[ident], self._last_seen[ident] = count, seen
                return
            self._pending[ident] = 0
            self._flushed_at[ident] = now
        self._write(ident, count, seen)

    def flush_all(self) -> None:
        """Write every pending count now (called at process exit)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            seen = dict(self._last_seen)
        for ident, count in pending.items():
            if count:
                try:
                    self._write(ident, count, seen[ident])
                except Exception:  # noqa: S110 - at exit the database may be gone (logging too): only the count is lost
                    pass

    @staticmethod
    def _write(ident: tuple, count: int, seen) -> None:
        key_id, key_hash = ident
        ApiKey.objects.filter(pk=key_id, key_hash=key_hash).update(last_used_at=seen, request_count=F("request_count") + count)


USAGE = KeyUsage()


def _match_env_key(value: str) -> str | None:
    found = None
    # Compare against every key, constant-time, so timing says nothing about
    # which key (or how much of one) matched.
    for index, key in enumerate(settings.CRYSTALLISE_API_KEYS):
        if hmac.compare_digest(value.encode(), key.encode()):
            found = f"env key #{index + 1}"
    return found


def _hint(value: str) -> str:
    if value.startswith("sk-"):
        return (
            " The value sent in X-API-Key looks like an OpenAI key (sk-…): it was probably sent in the "
            "wrong header. Send the Crystallise service key in X-API-Key and the OpenAI key in X-OpenAI-API-Key."
        )
    return ""


def authenticate_key(value: str) -> Caller:
    """Resolve an `X-API-Key` value to a Caller, or raise `AuthError`."""
    if not value:
        raise AuthError("Missing X-API-Key header. Every /v1/ endpoint requires a service API key.")
    env_label = _match_env_key(value)
    if env_label:
        return Caller(label=env_label, fingerprint=fingerprint(value))
    digest = hash_secret(value)
    row = KEY_OR_ANY_ACTIVE.first(digest=digest)
    key = row if row is not None and row.key_hash == digest else None
    if key is not None and key.is_active:
        USAGE.record(key)
        return Caller(label=key.label, fingerprint=fingerprint(value), api_key_id=key.pk)
    if key is None and row is None and not settings.CRYSTALLISE_API_KEYS:
        return Caller(label="dev mode", fingerprint=fingerprint(value), dev_mode=True)
    reason = "has been revoked" if key is not None else "is not a valid service key"
    raise AuthError(f"The X-API-Key sent {reason}.{_hint(value)}")


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        value = request.META.get(HEADER, "").strip()
        caller = authenticate_key(value)
        return caller, caller

    def authenticate_header(self, request) -> str:
        # A value here makes DRF answer 401 rather than 403.
        return 'ApiKey header="X-API-Key"'


class ApiKeySchema(OpenApiAuthenticationExtension):
    """Documents ApiKeyAuthentication as the `ApiKeyAuth` scheme (X-API-Key header) in the OpenAPI schema."""

    target_class = "crystallise.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-API-Key"}


class HasApiKey(BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Caller)


def request_openai_key(request) -> str | None:
    """The per-request OpenAI key (`X-OpenAI-API-Key`), if one was sent."""
    value = request.META.get(OPENAI_HEADER, "").strip()
    return value or None


def warn_if_dev_mode() -> None:
    """Log a loud warning at process start when dev mode is on."""
    from django.db import DatabaseError

    try:
        active = dev_mode_active()
    except DatabaseError:
        active = not settings.CRYSTALLISE_API_KEYS
    if active:
        logging.getLogger("crystallise.auth").warning(
            "\n" + "!" * 72 + "\n"
            "DEV MODE: no CRYSTALLISE_API_KEYS and no active admin API key.\n"
            "ANY non-empty X-API-Key is accepted. Anyone who can reach this port can\n"
            "spend your OpenAI credits. Set CRYSTALLISE_API_KEYS or run\n"
            "`python manage.py create_api_key NAME` before exposing the service.\n" + "!" * 72
        )

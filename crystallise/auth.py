"""Service authentication: `X-API-Key` against env keys and admin-managed keys.

Dev mode: while `CRYSTALLISE_API_KEYS` is empty and no active admin key
exists, any non-empty `X-API-Key` is accepted (a loud warning is logged at
start and `check --deploy` flags it). Creating the first admin key ends dev
mode at once, because the check runs per request.
"""

from __future__ import annotations

import hashlib
import hmac
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


def fingerprint(secret: str) -> str:
    return hashlib.sha256(b"crystallise-key:" + secret.encode()).hexdigest()[:16]


def dev_mode_active() -> bool:
    return not settings.CRYSTALLISE_API_KEYS and not ApiKey.objects.active().exists()


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
        ApiKey.objects.filter(pk=key.pk).update(
            last_used_at=timezone.now(), request_count=F("request_count") + 1
        )
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
    import logging

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

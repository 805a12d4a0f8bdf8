"""OpenAI key resolution and the encrypted hand-over of per-request keys.

Precedence: `X-OpenAI-API-Key` > `CRYSTALLISE_OPENAI_API_KEY` > `OPENAI_API_KEY`
(the last two are merged in settings). A per-request key is encrypted with
Fernet (key from `CRYSTALLISE_FERNET_KEY`, else derived from `SECRET_KEY`)
before it is stored for a worker, and the ciphertext is deleted when the job
ends; the clear key is never stored.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from crystallise.errors import ValidationError
from crystallise.llm.backends import get_backend

SOURCE_REQUEST = "request"
SOURCE_SERVER = "server"
SOURCE_NONE = "none"

NO_KEY_MESSAGE = (
    "No OpenAI API key is configured. Provide one in any of three ways: the "
    "X-OpenAI-API-Key request header, the CRYSTALLISE_OPENAI_API_KEY environment "
    "variable, or the OPENAI_API_KEY environment variable (or run with "
    "CRYSTALLISE_LLM_BACKEND=mock for offline demos)."
)


class MissingOpenAIKey(ValidationError):
    category = "auth"


def key_fingerprint(key: str | None) -> str:
    """A non-reversible identity of an OpenAI key, to notice a changed server key."""
    if not key:
        return ""
    return hashlib.sha256(b"crystallise-openai-key:" + key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ResolvedKey:
    key: str | None
    source: str

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)

    def __repr__(self) -> str:  # never print the key
        return f"ResolvedKey(source={self.source!r})"


def resolve_openai_key(request_key: str | None, *, backend: str | None = None) -> ResolvedKey:
    """Pick the key for an LLM call; fail fast (400 `auth`) when the openai backend has none."""
    backend = backend or settings.CRYSTALLISE_LLM_BACKEND
    if request_key:
        return ResolvedKey(request_key, SOURCE_REQUEST)
    if settings.CRYSTALLISE_OPENAI_API_KEY:
        return ResolvedKey(settings.CRYSTALLISE_OPENAI_API_KEY, SOURCE_SERVER)
    if not get_backend(backend).needs_key:
        return ResolvedKey(None, SOURCE_NONE)
    raise MissingOpenAIKey(NO_KEY_MESSAGE)


@cache
def _fernet(secret: str) -> Fernet:
    if settings.CRYSTALLISE_FERNET_KEY:
        return Fernet(settings.CRYSTALLISE_FERNET_KEY.encode())
    digest = hashlib.sha256(b"crystallise-fernet:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(value: str) -> str:
    return _fernet(settings.SECRET_KEY).encrypt(value.encode()).decode()


def decrypt(token: str) -> str | None:
    """The clear value, or None when it cannot be decrypted (e.g. the secret rotated)."""
    try:
        return _fernet(settings.SECRET_KEY).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def job_openai_key(job) -> tuple[bool, str | None]:
    """(available, key) for a job's OpenAI key: the per-request one while its ciphertext exists, else the server's.

    A job never switches keys: a server key replaced since the job started
    (another fingerprint) counts as unavailable.
    """
    from crystallise.jobs.models import JobSecret

    if job.openai_key_source == SOURCE_REQUEST:
        secret = JobSecret.objects.filter(job_id=job.pk).first()
        key = decrypt(secret.ciphertext) if secret else None
        return key is not None, key
    if not get_backend(job.llm_backend).needs_key:
        return True, None
    key = settings.CRYSTALLISE_OPENAI_API_KEY
    if not key or (job.openai_key_fingerprint and key_fingerprint(key) != job.openai_key_fingerprint):
        return False, None
    return True, key

from __future__ import annotations

from django.conf import settings

# Imported up front (about a second): a worker pays it once at start, not on its first job.
import crystallise.llm.openai_client  # noqa: F401
from crystallise.llm.backends import get_backend
from crystallise.llm.base import LLMClient, RetryPolicy


def make_client(
    *,
    api_key: str | None,
    backend: str | None = None,
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
) -> LLMClient:
    """One client per job or request (never per call): it owns the connection pool and the pacer."""
    retry = retry or RetryPolicy(
        max_attempts=settings.CRYSTALLISE_LLM_MAX_ATTEMPTS,
        backoff=settings.CRYSTALLISE_LLM_BACKOFF,
        timeout=settings.CRYSTALLISE_LLM_TIMEOUT,
    )
    spec = get_backend(backend or settings.CRYSTALLISE_LLM_BACKEND)
    return spec.client_class().create(
        api_key=api_key, concurrency=concurrency or settings.CRYSTALLISE_LLM_CONCURRENCY, retry=retry
    )

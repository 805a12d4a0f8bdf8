from __future__ import annotations

from django.conf import settings

from crystallise.llm.base import LLMClient, RetryPolicy
from crystallise.llm.mock import MockClient

# Imported up front (about a second): a worker pays it once at start, not on its first job.
from crystallise.llm.openai_client import OpenAIClient


def make_client(
    *,
    api_key: str | None,
    backend: str | None = None,
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
) -> LLMClient:
    """One client per job or request (never per call): it owns the connection pool and the pacer."""
    backend = backend or settings.CRYSTALLISE_LLM_BACKEND
    retry = retry or RetryPolicy(
        max_attempts=settings.CRYSTALLISE_LLM_MAX_ATTEMPTS,
        backoff=settings.CRYSTALLISE_LLM_BACKOFF,
        timeout=settings.CRYSTALLISE_LLM_TIMEOUT,
    )
    if backend == "mock":
        return MockClient()
    return OpenAIClient(
        api_key=api_key or "",
        base_url=settings.CRYSTALLISE_OPENAI_BASE_URL,
        concurrency=concurrency or settings.CRYSTALLISE_LLM_CONCURRENCY,
        retry=retry,
    )

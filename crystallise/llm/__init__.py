"""The LLM layer: the only code that talks to a model provider.

`make_client()` returns an object with one coroutine, `complete()`, that
turns chat messages and a pydantic schema into a parsed answer plus the
usage the provider reported. Two backends share that interface: `openai`
(the official SDK, any OpenAI-compatible endpoint) and `mock` (offline,
deterministic, free).
"""

from __future__ import annotations

from crystallise.llm.base import LLMClient, LLMResult, RetryPolicy
from crystallise.llm.factory import make_client

__all__ = ["LLMClient", "LLMResult", "RetryPolicy", "make_client"]

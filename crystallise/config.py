"""Qualified models: what each can do and what it costs.

`model_capabilities` is the gate every endpoint passes before any LLM call;
`DEFAULT_PRICING_PER_1M` is a snapshot of the public rate card (USD per 1M
tokens). The snapshot does not auto-update: see docs/troubleshooting.md#c1.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from crystallise.errors import ValidationError

DEFAULT_MODEL = "gpt-5-nano"

STRUCTURED_OUTPUTS = "structured_outputs"
FUNCTION_CALLING = "function_calling"


@dataclass(frozen=True)
class ModelCapabilities:
    context_window: int
    max_output_tokens: int
    structured_outputs: bool
    function_calling: bool
    # Reasoning models take `reasoning_effort` and count reasoning tokens as output.
    reasoning: bool

    def supports(self, feature: str) -> bool:
        return bool(getattr(self, feature))


model_capabilities: dict[str, ModelCapabilities] = {
    "gpt-5-nano": ModelCapabilities(400_000, 128_000, True, True, True),
    "gpt-5-mini": ModelCapabilities(400_000, 128_000, True, True, True),
    "gpt-5": ModelCapabilities(400_000, 128_000, True, True, True),
    "gpt-4.1-nano": ModelCapabilities(1_047_576, 32_768, True, True, False),
    "gpt-4.1-mini": ModelCapabilities(1_047_576, 32_768, True, True, False),
    "gpt-4o-mini": ModelCapabilities(128_000, 16_384, True, True, False),
    # Listed so the gate can say why it is refused: no structured outputs.
    "gpt-3.5-turbo": ModelCapabilities(16_385, 4_096, False, True, False),
}

# USD per 1M tokens: input, cached input, output (reasoning tokens bill as output).
DEFAULT_PRICING_PER_1M: dict[str, dict[str, Decimal]] = {
    "gpt-5-nano": {"input": Decimal("0.05"), "cached_input": Decimal("0.005"), "output": Decimal("0.40")},
    "gpt-5-mini": {"input": Decimal("0.25"), "cached_input": Decimal("0.025"), "output": Decimal("2.00")},
    "gpt-5": {"input": Decimal("1.25"), "cached_input": Decimal("0.125"), "output": Decimal("10.00")},
    "gpt-4.1-nano": {"input": Decimal("0.10"), "cached_input": Decimal("0.025"), "output": Decimal("0.40")},
    "gpt-4.1-mini": {"input": Decimal("0.40"), "cached_input": Decimal("0.10"), "output": Decimal("1.60")},
    "gpt-4o-mini": {"input": Decimal("0.15"), "cached_input": Decimal("0.075"), "output": Decimal("0.60")},
    "gpt-3.5-turbo": {"input": Decimal("0.50"), "cached_input": Decimal("0.50"), "output": Decimal("1.50")},
}


def validate_model(model: str | None, *, requires: tuple[str, ...] = (STRUCTURED_OUTPUTS,)) -> str:
    """Return the model name if it is qualified and has `requires`; else a `validation` error."""
    name = model or DEFAULT_MODEL
    caps = model_capabilities.get(name) if isinstance(name, str) else None
    if caps is None:
        usable = sorted(m for m, c in model_capabilities.items() if all(c.supports(f) for f in requires))
        raise ValidationError(
            f"Model {name!r} is not supported. Supported models: {', '.join(usable)}.",
            errors={"model": [f"Unknown model {name!r}."]},
        )
    missing = [feature for feature in requires if not caps.supports(feature)]
    if missing:
        raise ValidationError(
            f"Model {name!r} lacks {', '.join(missing)}, which this endpoint needs.",
            errors={"model": [f"Model {name!r} does not support {', '.join(missing)}."]},
        )
    return name

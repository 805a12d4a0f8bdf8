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


# The lanes a call can be billed in: "default" (online, the table above), "batch" (the Batch API)
# and "flex" (online with service_tier="flex"). Batch and flex bill at half the default price;
# flex exists only for the models listed here.
TIERS = ("default", "batch", "flex")
_HALF = Decimal("0.5")
TIER_PRICING_PER_1M: dict[str, dict[str, dict[str, Decimal]]] = {
    "default": DEFAULT_PRICING_PER_1M,
    "batch": {model: {k: v * _HALF for k, v in price.items()} for model, price in DEFAULT_PRICING_PER_1M.items()},
    "flex": {model: {k: v * _HALF for k, v in DEFAULT_PRICING_PER_1M[model].items()}
             for model in ("gpt-5-nano", "gpt-5-mini", "gpt-5")},
}

# Tokens an account may have waiting in batches per model (the provider's "enqueued token" cap,
# tier 1 figures); a batch over it fails at validation. CRYSTALLISE_BATCH_ENQUEUED_TOKENS overrides.
BATCH_ENQUEUED_TOKEN_LIMIT: dict[str, int] = {
    "gpt-5-nano": 2_000_000, "gpt-5-mini": 2_000_000, "gpt-5": 900_000, "gpt-4.1-nano": 2_000_000,
    "gpt-4.1-mini": 2_000_000, "gpt-4o-mini": 2_000_000, "gpt-3.5-turbo": 2_000_000,
}


def tier_price(model: str, tier: str = "default") -> dict[str, Decimal]:
    """USD per 1M tokens of `model` billed in `tier`; a tier without a price for the model bills as default."""
    return TIER_PRICING_PER_1M.get(tier, {}).get(model) or DEFAULT_PRICING_PER_1M[model]


def supports_flex(model: str) -> bool:
    return model in TIER_PRICING_PER_1M["flex"]


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


def validate_lane(*, model: str | None, mode: str, service_tier: str, fallback: str) -> str:
    """Check a job's lane options together; returns the tier its calls bill at. A `validation` error otherwise."""
    name = model or DEFAULT_MODEL
    if mode == "batch" and service_tier == "flex":
        raise ValidationError("service_tier 'flex' is for online jobs; batch jobs are billed at the batch price.",
                              errors={"service_tier": ["Use 'flex' with mode 'online' only."]})
    if fallback == "online" and mode != "batch":
        raise ValidationError("fallback 'online' applies to batch jobs only.",
                              errors={"fallback": ["Use fallback with mode 'batch' only."]})
    if service_tier == "flex" and not supports_flex(name):
        usable = ", ".join(sorted(TIER_PRICING_PER_1M["flex"]))
        raise ValidationError(f"Model {name!r} has no flex tier. Flex models: {usable}.",
                              errors={"service_tier": [f"Model {name!r} does not support 'flex'."]})
    return "batch" if mode == "batch" else service_tier

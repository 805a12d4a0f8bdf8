"""Model gate, token counting with the real tokenizer, cost from usage."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crystallise.config import DEFAULT_PRICING_PER_1M, model_capabilities, validate_model
from crystallise.errors import ValidationError
from crystallise.tokens import Usage, cost_usd, count_message_tokens, count_tokens, estimate_cost_usd


def test_default_and_mini_models_are_qualified():
    assert validate_model(None) == "gpt-5-nano"
    assert validate_model("gpt-5-mini") == "gpt-5-mini"
    assert model_capabilities["gpt-5-nano"].structured_outputs


def test_unknown_model_is_a_validation_error():
    with pytest.raises(ValidationError) as info:
        validate_model("gpt-9-ultra")
    assert info.value.category == "validation" and "model" in info.value.errors
    # The models offered instead are the ones the endpoint can use (no structured outputs → not offered).
    assert "gpt-5-nano" in info.value.detail and "gpt-3.5-turbo" not in info.value.detail


def test_model_lacking_a_required_feature_is_refused():
    with pytest.raises(ValidationError) as info:
        validate_model("gpt-3.5-turbo")
    assert "structured_outputs" in info.value.detail


def test_prices_match_the_rate_card_snapshot():
    assert DEFAULT_PRICING_PER_1M["gpt-5-nano"] == {
        "input": Decimal("0.05"), "cached_input": Decimal("0.005"), "output": Decimal("0.40")}
    assert DEFAULT_PRICING_PER_1M["gpt-5-mini"]["output"] == Decimal("2.00")


def test_o200k_counts_match_known_values():
    # Hand-checked against o200k_base: "hello world" is two tokens, and the
    # encoding differs from a characters/4 guess on real text.
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0
    text = "Sumatriptan 100 mg versus placebo in the acute treatment of migraine: a randomised trial."
    assert count_tokens(text) != len(text) // 4


def test_message_overhead_is_three_per_message_plus_three():
    messages = [{"role": "system", "content": "hello world"}, {"role": "user", "content": "hello world"}]
    assert count_message_tokens(messages) == 2 + 2 + 3 * 2 + 3


def test_cost_uses_cached_rate_and_counts_reasoning_as_output():
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=100_000, reasoning_tokens=60_000)
    # 600k × 0.05 + 400k × 0.005 + 100k × 0.40 (reasoning already inside output) per 1M
    assert cost_usd("gpt-5-nano", usage) == Decimal("0.03") + Decimal("0.002") + Decimal("0.04")


def test_estimate_prices_all_input_at_full_rate():
    assert estimate_cost_usd("gpt-5-mini", input_tokens=2_000_000, output_tokens=1_000_000) == Decimal("2.5")

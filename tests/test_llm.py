"""The LLM layer: the real openai SDK over HTTP against the local fake."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from pydantic import BaseModel

from crystallise.errors import LLMError
from crystallise.keyvault import SOURCE_REQUEST, SOURCE_SERVER, MissingOpenAIKey, decrypt, encrypt, resolve_openai_key
from crystallise.llm import RetryPolicy, make_client
from crystallise.llm.base import CallOptions
from crystallise.llm.openai_client import classify, response_format
from crystallise.llm.pacing import parse_duration
from screening import prompts

MESSAGES = prompts.messages_for(
    prompts.system_prompt({"inclusion": ["randomized trial of migraine treatment"], "exclusion": ["pediatric patients"]}),
    "Sumatriptan for acute migraine", "A randomized placebo-controlled trial of sumatriptan treatment in adults with migraine.", [],
)


class Tiny(BaseModel):
    answer: str
    score: float


def options(schema=prompts.decision_schema(("I1", "E1"))) -> CallOptions:
    return CallOptions(model="gpt-5-nano", schema=schema, max_output_tokens=300, cache_key="t")


def call(fake, *, key="sk-test", schema=prompts.decision_schema(("I1", "E1")), attempts=4, timeout=5.0, messages=MESSAGES):
    async def go():
        client = make_client(api_key=key, backend="openai", concurrency=8,
                             retry=RetryPolicy(max_attempts=attempts, backoff=0.01, timeout=timeout))
        try:
            return await client.complete(messages, options(schema))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_structured_output_is_parsed_with_usage(fake_openai):
    result = call(fake_openai)
    assert result.backend == "openai"
    verdicts = {cid: v.verdict for cid, v in result.parsed.verdicts}
    assert verdicts == {"I1": "met", "E1": "not_met"}
    assert result.usage.input_tokens > 50 and result.usage.output_tokens > 0
    sent = fake_openai.requests[-1]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["reasoning_effort"] == "minimal"
    assert sent["messages"][0]["role"] == "system"


def test_request_body_is_the_whole_chat_completions_request(fake_openai):
    """The body is serialised from a cached head plus the messages: the provider gets every field, exactly."""
    schema = prompts.decision_schema(("I1", "E1"))
    messages = [MESSAGES[0], {"role": "user", "content": "Étude randomisée — 5 mg vs placebo, α = 0.05"}]

    async def go(model):
        client = make_client(api_key="sk-test", backend="openai", concurrency=2, retry=RetryPolicy(max_attempts=1))
        try:
            opts = CallOptions(model=model, schema=schema, max_output_tokens=300, cache_key="job-1")
            await client.complete(messages, opts)
        finally:
            await client.aclose()

    asyncio.run(go("gpt-5-nano"))
    asyncio.run(go("gpt-4.1-nano"))
    reasoning, plain = fake_openai.requests[-2], fake_openai.requests[-1]
    expected = {
        "model": "gpt-5-nano", "messages": messages, "response_format": response_format(schema),
        "max_completion_tokens": 300, "reasoning_effort": "minimal", "prompt_cache_key": "job-1",
    }
    assert reasoning["body"] == expected
    assert reasoning["content_type"] == "application/json"
    # A model without reasoning is not sent reasoning_effort.
    del expected["reasoning_effort"]
    assert plain["body"] == {**expected, "model": "gpt-4.1-nano"}


def test_base_url_and_key_reach_the_provider(fake_openai):
    call(fake_openai, key="sk-per-request-1")
    assert fake_openai.stats["keys_seen"] == {"sk-per-request-1": 1}


def test_rejected_key_is_permanent_auth_and_not_retried(fake_openai):
    fake_openai.config.valid_keys = {"sk-good"}
    with pytest.raises(LLMError) as info:
        call(fake_openai, key="sk-bad-key-123456")
    assert info.value.category == "auth" and info.value.permanent
    assert fake_openai.count == 1
    assert "sk-bad-key-123456" not in info.value.detail


def test_429_with_retry_after_is_retried_and_honoured(fake_openai):
    fake_openai.config.script = ["429", "429"]
    fake_openai.config.fault_retry_after = 0.3
    start = time.monotonic()
    result = call(fake_openai)
    assert result.attempts == 3
    assert time.monotonic() - start >= 0.55  # two waits of Retry-After 0.3 s


def test_flex_capacity_refusals_do_not_slow_the_clients_other_calls(fake_openai):
    # "Resource unavailable" is the flex tier's capacity, not the account's rate limit: the call is
    # retried, but the client's pacing (every other call of the job) is neither paused nor lowered.
    fake_openai.config.rpm = 6000
    fake_openai.config.flex_unavailable = 2

    async def go():
        client = make_client(api_key="sk-test", backend="openai", concurrency=8,
                             retry=RetryPolicy(max_attempts=4, backoff=0.01, timeout=5.0))
        try:
            flex = dataclasses.replace(options(), service_tier="flex")
            result = await client.complete(MESSAGES, flex)
            return result, client.pacer
        finally:
            await client.aclose()

    result, pacer = asyncio.run(go())
    assert result.tier == "flex" and result.attempts == 3
    assert pacer.refused == 0 and pacer.backoff == 1.0


def test_5xx_is_transient_then_exhausted(fake_openai):
    fake_openai.config.p_500 = 1.0
    with pytest.raises(LLMError) as info:
        call(fake_openai, attempts=3)
    assert info.value.category == "upstream" and not info.value.permanent
    assert fake_openai.count == 3


def test_malformed_and_schema_invalid_outputs_are_retried_and_billed(fake_openai):
    fake_openai.config.script = ["malformed", "schema_invalid"]
    result = call(fake_openai)
    assert result.attempts == 3
    # The schema-invalid answer was billed by the provider: its usage counts.
    single = call(fake_openai).usage
    assert result.usage.input_tokens >= 2 * single.input_tokens


def test_hang_past_timeout_is_retried(fake_openai):
    fake_openai.config.script = ["hang"]
    fake_openai.config.hang_seconds = 5
    result = call(fake_openai, timeout=0.5)
    assert result.attempts == 2


def test_bad_request_is_permanent_validation():
    import httpx2
    import openai

    request = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(400, request=request, json={"error": {"message": "bad"}})
    error = classify(openai.BadRequestError("bad", response=response, body={"message": "bad"}))
    assert error.category == "validation" and error.permanent


def test_unknown_schema_gets_generic_schema_valid_output(fake_openai):
    result = call(fake_openai, schema=Tiny, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(result.parsed, Tiny)


def test_pacer_follows_rate_limit_headers(fake_openai):
    fake_openai.config.rpm = 600  # 10 per second

    async def go():
        client = make_client(api_key="sk-test", backend="openai", concurrency=16,
                             retry=RetryPolicy(max_attempts=6, backoff=0.05, timeout=5))
        try:
            await client.complete(MESSAGES, options())  # learns the limit
            start = time.monotonic()
            await asyncio.gather(*(client.complete(MESSAGES, options()) for _ in range(30)))
            return time.monotonic() - start
        finally:
            await client.aclose()

    elapsed = asyncio.run(go())
    assert fake_openai.stats["status"].get("429", 0) <= 3
    assert 2.0 <= elapsed <= 6.0


def test_mock_backend_is_offline_and_marked():
    async def go():
        client = make_client(api_key=None, backend="mock")
        return await client.complete(MESSAGES, options())

    result = asyncio.run(go())
    assert result.backend == "mock" and result.usage.input_tokens == 0
    assert {cid: v.verdict for cid, v in result.parsed.verdicts} == {"I1": "met", "E1": "not_met"}


def test_key_precedence(settings):
    settings.CRYSTALLISE_OPENAI_API_KEY = "sk-server"
    assert resolve_openai_key("sk-request").source == SOURCE_REQUEST
    resolved = resolve_openai_key(None)
    assert resolved.source == SOURCE_SERVER and resolved.key == "sk-server"
    assert "sk-server" not in repr(resolved)


def test_no_key_anywhere_fails_fast_naming_three_ways(settings):
    settings.CRYSTALLISE_OPENAI_API_KEY = ""
    with pytest.raises(MissingOpenAIKey) as info:
        resolve_openai_key(None, backend="openai")
    assert info.value.category == "auth" and info.value.status_code == 400
    for way in ("X-OpenAI-API-Key", "CRYSTALLISE_OPENAI_API_KEY", "OPENAI_API_KEY"):
        assert way in info.value.detail


def test_per_request_key_encryption_round_trip():
    token = encrypt("sk-secret-value")
    assert "sk-secret-value" not in token
    assert decrypt(token) == "sk-secret-value"
    assert decrypt("garbage") is None


@pytest.mark.parametrize("value,seconds", [("1.5", 1.5), ("120ms", 0.12), ("6m0s", 360), ("1s", 1), ("x", None)])
def test_reset_durations(value, seconds):
    assert parse_duration(value) == seconds

"""The fake OpenAI server, driven by the real `openai` SDK over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Literal

import jsonschema
import openai
import pydantic
import pytest
from openai.lib._pydantic import to_strict_json_schema

from tests.fake_openai import FakeOpenAI, get_encoding, schema_value

MODEL = "gpt-5-nano"
HELLO = [{"role": "user", "content": "Hello"}]


class Reason(pydantic.BaseModel):
    text: str
    weight: float = pydantic.Field(ge=0, le=1)


class Verdict(pydantic.BaseModel):
    decision: Literal["include", "exclude", "unsure"]
    confidence: int = pydantic.Field(ge=1, le=5)
    reasons: list[Reason]
    note: str | None
    related: Verdict | None = None


def client(fake: FakeOpenAI, key: str = "sk-test", **kwargs) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=fake.base_url, max_retries=0, **kwargs)


def run(coro):
    return asyncio.run(coro)


def test_parse_returns_schema_conforming_object_and_usage():
    async def go(fake):
        async with client(fake) as c:
            raw = await c.chat.completions.with_raw_response.parse(
                model=MODEL, messages=HELLO, response_format=Verdict
            )
            return raw.headers, raw.parse()

    with FakeOpenAI(reasoning_tokens=7) as fake:
        headers, completion = run(go(fake))
        body = fake.requests[-1]["body"]
    assert headers["x-request-id"].startswith("req_")
    assert completion.model == MODEL
    verdict = completion.choices[0].message.parsed
    assert isinstance(verdict, Verdict) and verdict.reasons
    jsonschema.validate(json.loads(completion.choices[0].message.content), body["response_format"]["json_schema"]["schema"])
    usage = completion.usage
    enc = get_encoding()
    assert usage.prompt_tokens == len(enc.encode("Hello")) + 3 + 3
    assert usage.completion_tokens == len(enc.encode(completion.choices[0].message.content)) + 7
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert fake.stats["status"] == {"200": 1} and fake.stats["keys_seen"] == {"sk-test": 1}


def test_schema_value_satisfies_strict_schemas():
    schema = to_strict_json_schema(Verdict)
    jsonschema.validate(schema_value(schema), schema)
    odd = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 10},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}, "minItems": 3},
            "maybe": {"type": ["string", "null"], "minLength": 20},
            "when": {"type": "string", "format": "date"},
            "pick": {"oneOf": [{"type": "null"}, {"type": "boolean"}]},
        },
        "required": ["n", "tags", "maybe", "when", "pick"],
    }
    jsonschema.validate(schema_value(odd), odd)


def test_plain_text_and_custom_responder():
    async def go(fake):
        async with client(fake) as c:
            plain = await c.chat.completions.create(model=MODEL, messages=HELLO)
            fake.config.responder = lambda body: {"decision": "exclude", "confidence": 2, "reasons": [], "note": None}
            parsed = await c.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Verdict)
            return plain, parsed

    with FakeOpenAI() as fake:
        plain, parsed = run(go(fake))
    assert plain.choices[0].message.content and plain.choices[0].finish_reason == "stop"
    assert parsed.choices[0].message.parsed.decision == "exclude"


def test_bad_and_revoked_keys_get_401():
    async def go(fake):
        errors = []
        for key in ("sk-good", "sk-wrong-1234", "sk-revoked"):
            try:
                async with client(fake, key) as c:
                    await c.chat.completions.create(model=MODEL, messages=HELLO)
            except openai.AuthenticationError as e:
                errors.append(e)
        return errors

    with FakeOpenAI(valid_keys={"sk-good", "sk-revoked"}, revoked_keys={"sk-revoked"}) as fake:
        errors = run(go(fake))
        assert fake.stats["status"] == {"200": 1, "401": 2}
        assert fake.stats["keys_seen"] == {"sk-good": 1, "sk-wrong-1234": 1, "sk-revoked": 1}
    assert len(errors) == 2
    assert errors[0].code == "invalid_api_key"
    assert errors[0].body["message"].startswith("Incorrect API key provided: sk-...1234.")


def test_rate_limit_gives_429_with_retry_after():
    async def go():
        async with client(fake) as c:
            ok = await c.chat.completions.with_raw_response.create(model=MODEL, messages=HELLO)
            with pytest.raises(openai.RateLimitError) as info:
                await c.chat.completions.create(model=MODEL, messages=HELLO)
            return ok.headers, info.value

    with FakeOpenAI(rpm=60) as fake:  # a burst of 1, then one per second
        ok_headers, error = run(go())
        assert fake.stats["status"] == {"200": 1, "429": 1}
        assert fake.stats["accepted"] == 1
    assert ok_headers["x-ratelimit-limit-requests"] == "60"
    assert ok_headers["x-ratelimit-remaining-requests"] == "0"
    assert ok_headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    assert 0.5 < float(error.response.headers["retry-after"]) <= 1.0
    assert 500 < int(error.response.headers["retry-after-ms"]) <= 1000
    assert error.code == "rate_limit_exceeded"


def test_scripted_faults_in_order():
    async def go():
        outcomes = []
        async with client(fake) as c:
            for _ in range(6):
                try:
                    await c.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Verdict)
                    outcomes.append("ok")
                except Exception as e:  # noqa: BLE001 - the type is the outcome
                    outcomes.append(type(e).__name__)
        return outcomes

    with FakeOpenAI(script=["429", "500", "malformed", "schema_invalid", "401", "ok"]) as fake:
        outcomes = run(go())
        log = fake.requests
    assert outcomes == [
        "RateLimitError", "InternalServerError", "JSONDecodeError", "ValidationError", "AuthenticationError", "ok"
    ]
    assert [r["status"] for r in log] == [429, 500, 200, 200, 401, 200]
    assert fake.count == 6


def test_seeded_faults_are_reproducible():
    async def statuses():
        async with client(fake) as c:
            for _ in range(30):
                try:
                    await c.chat.completions.create(model=MODEL, messages=HELLO)
                except openai.APIStatusError:
                    pass
        return [r["status"] for r in fake.requests]

    runs = []
    for _ in range(2):
        with FakeOpenAI(seed=3, p_500=0.3, p_429=0.2) as fake:
            runs.append(run(statuses()))
    assert runs[0] == runs[1]
    assert {200, 429, 500} <= set(runs[0])


def test_fail_after_revokes_the_key_mid_job():
    async def go():
        async with client(fake) as c:
            await asyncio.gather(*(c.chat.completions.create(model=MODEL, messages=HELLO) for _ in range(3)))
            with pytest.raises(openai.AuthenticationError):
                await c.chat.completions.create(model=MODEL, messages=HELLO)

    with FakeOpenAI(fail_after=3) as fake:
        run(go())
        assert fake.stats["status"] == {"200": 3, "401": 1}


def test_hang_outlasts_client_timeout_and_stop_is_quick():
    async def go():
        async with client(fake, timeout=0.3) as c:
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(model=MODEL, messages=HELLO)

    fake = FakeOpenAI(p_hang=1.0, hang_seconds=20).start()
    try:
        run(go())
    finally:
        began = time.monotonic()
        fake.stop()
    assert time.monotonic() - began < 2


def test_latency_and_concurrency():
    async def one():
        async with client(fake) as c:
            began = time.monotonic()
            await c.chat.completions.create(model=MODEL, messages=HELLO)
            return time.monotonic() - began

    async def many():
        async with client(fake) as c:
            began = time.monotonic()
            await asyncio.gather(*(
                c.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], response_format=Verdict)
                for i in range(100)
            ))
            return time.monotonic() - began

    with FakeOpenAI(latency=0.3) as fake:
        assert 0.3 <= run(one()) < 1.5  # latency is honoured (upper bound loose: CI machines are busy)
        fake.config.latency = 0.2
        assert run(many()) < 5.0  # served concurrently: one after another would take 20 s
        assert fake.stats["max_in_flight"] >= 50
        assert fake.stats["status"] == {"200": 101}


def test_prompt_caching_counts_repeated_prefixes():
    system = {"role": "system", "content": " ".join(f"word{i}" for i in range(600))}

    async def go():
        async with client(fake) as c:
            out = []
            for question in ("first question", "second question", "first question"):
                r = await c.chat.completions.create(model=MODEL, messages=[system, {"role": "user", "content": question}])
                out.append((r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens))
            return out

    with FakeOpenAI() as fake:
        (total, cached0), (_, cached1), (_, cached2) = run(go())
        assert total >= 1024
        assert cached0 == 0
        assert 1024 <= cached1 < total and (cached1 - 1024) % 128 == 0
        assert cached2 == 1024 + (total - 1024) // 128 * 128  # the same prompt again: its longest boundary
        assert fake.stats["cached_tokens"] == cached1 + cached2


@pytest.mark.timeout(30)
def test_subprocess_mode_prints_ready_and_serves_stats():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", "0", "--latency", "0.01", "--valid-keys", "sk-a,sk-b"],
        cwd=root, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        base_url = line.split()[1]
        control = base_url.removesuffix("/v1") + "/_fake"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def call(path, payload=None):
            data = None if payload is None else json.dumps(payload).encode()
            request = urllib.request.Request(control + path, data=data, headers={"content-type": "application/json"})
            return json.load(opener.open(request, timeout=5))

        async def go():
            async with openai.AsyncOpenAI(api_key="sk-a", base_url=base_url, max_retries=0) as c:
                await c.chat.completions.parse(model=MODEL, messages=HELLO, response_format=Verdict)
                assert call("/config", {"script": ["500"]})["script"] == ["500"]
                with pytest.raises(openai.InternalServerError):
                    await c.chat.completions.create(model=MODEL, messages=HELLO)

        run(go())
        stats = call("/stats")
        assert stats["status"] == {"200": 1, "500": 1} and stats["keys_seen"] == {"sk-a": 2}
        assert call("/reset", {})["ok"] and call("/stats")["requests"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)

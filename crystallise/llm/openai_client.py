"""The `openai` backend: the official SDK against OpenAI or any compatible endpoint.

SDK exceptions become one domain error, `LLMError`, with a contract category
and a `permanent` flag. Transient errors (429, timeouts, connection errors,
5xx, unparseable or schema-invalid output) are retried here with backoff that
honours `Retry-After`; permanent ones (rejected key, bad request) never are.
The SDK's own retries are off so that every attempt is paced and counted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random

import httpx2
import openai
import pydantic
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from crystallise.config import model_capabilities
from crystallise.errors import Category, LLMError
from crystallise.llm.backends import OPENAI
from crystallise.llm.base import CallOptions, LLMResult, RetryPolicy
from crystallise.llm.pacing import Pacer, retry_after_seconds
from crystallise.logs import redact
from crystallise.metrics.record import observed_attempt
from crystallise.tokens import Usage

logger = logging.getLogger(__name__)


def usage_from(payload) -> Usage:
    """Usage from a ChatCompletion (object or dict); zeros when absent."""
    if payload is None:
        return Usage()
    if isinstance(payload, dict):
        usage = payload.get("usage") or {}
    else:
        raw = getattr(payload, "usage", None)
        usage = raw.model_dump() if raw is not None else {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        cached_input_tokens=int(prompt_details.get("cached_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def classify(exc: Exception) -> LLMError:
    """Map an SDK exception to the service's error vocabulary."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return LLMError("The model provider timed out.", category=Category.UPSTREAM, permanent=False)
    if isinstance(exc, openai.APIConnectionError):
        return LLMError("Could not connect to the model provider.", category=Category.UPSTREAM, permanent=False)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code = getattr(exc, "code", None)
        if status in (401, 403) or code == "insufficient_quota":
            what = "is out of quota" if code == "insufficient_quota" else "was rejected (invalid or revoked)"
            return LLMError(
                f"The OpenAI API key {what}: the provider answered {status}.",
                category=Category.AUTH,
                permanent=True,
            )
        if status == 429:
            error = LLMError(
                "The model provider's rate limit was exceeded (429).",
                category=Category.RATE_LIMIT,
                permanent=False,
                retry_after=retry_after_seconds(exc.response.headers),
            )
            # Flex processing without capacity: not billed; retried, then sent in the default tier.
            error.resource_unavailable = (code == "resource_unavailable"  # type: ignore[attr-defined]
                                          or "resource unavailable" in str(getattr(exc, "message", "")).lower())
            return error
        if status in (408, 409) or status >= 500:
            return LLMError(
                f"The model provider failed with HTTP {status}.",
                category=Category.UPSTREAM,
                permanent=False,
                retry_after=retry_after_seconds(exc.response.headers),
            )
        return LLMError(
            f"The model provider refused the request (HTTP {status}): {redact(str(getattr(exc, 'message', '')))[:300]}",
            category=Category.VALIDATION,
            permanent=True,
        )
    return LLMError(f"Unexpected model provider error: {type(exc).__name__}.", category=Category.UPSTREAM, permanent=False)


class _BadOutput(LLMError):
    """A 200 whose content is not the requested structure. Billed, so usage is kept."""

    bad_output = True

    def __init__(self, detail: str, usage: Usage) -> None:
        super().__init__(detail, category=Category.UPSTREAM, permanent=False)
        self.usage = usage


class OpenAIClient:
    backend = OPENAI.name

    @classmethod
    def create(cls, *, api_key: str | None, concurrency: int, retry: RetryPolicy) -> OpenAIClient:
        from django.conf import settings

        return cls(api_key=api_key or "", base_url=settings.CRYSTALLISE_OPENAI_BASE_URL, concurrency=concurrency,
                   retry=retry)

    def __init__(self, *, api_key: str, base_url: str | None, concurrency: int, retry: RetryPolicy) -> None:
        self.retry = retry
        self.pacer = Pacer(ceiling=concurrency)
        # One pool per client sized for the job's concurrency: the default
        # pool (100 connections) would queue calls invisibly above it.
        # aiohttp transport: a fraction of the CPU per request of the pure-Python one,
        # which matters at hundreds of calls per second on a small worker.
        http_client = openai.DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8),
            timeout=httpx2.Timeout(retry.timeout, connect=min(10.0, retry.timeout)),
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            timeout=retry.timeout,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        await self._client.close()

    def _wait(self, state) -> float:
        exc = state.outcome.exception()
        hint = getattr(exc, "retry_after", None)
        if hint is not None:
            return min(float(hint), self.retry.max_backoff)
        base = self.retry.backoff * (2 ** (state.attempt_number - 1))
        return min(base * (0.5 + random.random()), self.retry.max_backoff)

    async def complete(self, messages: list[dict], options: CallOptions) -> LLMResult:
        spent = Usage()
        attempts = 0
        # Flex calls refused for lack of capacity: they do not count against max_attempts, and after
        # CRYSTALLISE_FLEX_MAX_TRIES of them the call goes in the default tier.
        flex_refusals = 0
        asked = options
        retrying = AsyncRetrying(
            stop=lambda state: stop_after_attempt(self.retry.max_attempts + flex_refusals)(state),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, LLMError) and not e.permanent),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    try:
                        parsed, usage, reported, tier = await observed_attempt(self._once(messages, options),
                                                                               options.model)
                    except _BadOutput as bad:
                        spent = spent + bad.usage
                        raise
                    except LLMError as error:
                        if options.service_tier == "flex" and getattr(error, "resource_unavailable", False):
                            flex_refusals += 1
                            if flex_refusals >= flex_max_tries():
                                options = dataclasses.replace(options, service_tier=None)
                        raise
                    spent = spent + usage
                    if asked.service_tier:
                        tier = tier if tier in ("flex", "default") else (options.service_tier or "default")
                    return LLMResult(parsed=parsed, usage=spent, backend=self.backend, attempts=attempts,
                                     model=reported, tier=tier if asked.service_tier else None)
        except LLMError as exc:
            exc.usage = spent  # type: ignore[attr-defined]
            exc.attempts = attempts  # type: ignore[attr-defined]
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, messages: list[dict], options: CallOptions):
        prompt_chars = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
        ticket = await self.pacer.acquire(self.pacer.estimate_tokens(prompt_chars, options.max_output_tokens))
        # The request goes through the SDK's generic `post` (its documented way
        # to send a raw body: same auth, base URL, timeouts and error classes),
        # and the reply is read as JSON and validated with pydantic directly.
        # The typed `chat.completions.parse()` sends the same bytes but its
        # per-call param transform, schema generation and response models cost
        # more CPU than the rest of the pipeline together at hundreds of calls/s.
        body = request_body(messages, options)
        try:
            raw = await self._client.post("/chat/completions", cast_to=httpx2.Response, body=body)
        except openai.APIStatusError as exc:
            error = classify(exc)
            # A flex "resource unavailable" is the tier's capacity, not the key's limit: it slows this call alone.
            limited = error.category == Category.RATE_LIMIT and not getattr(error, "resource_unavailable", False)
            self.pacer.failed(ticket, exc.response.headers, rate_limited=limited, retry_after=error.retry_after)
            raise error from None
        except BaseException as exc:  # connection errors, timeouts, cancellation
            self.pacer.failed(ticket, None, rate_limited=False, retry_after=None)
            if isinstance(exc, openai.OpenAIError):
                raise classify(exc) from None
            raise
        try:
            payload = json.loads(raw.content)
        except ValueError:
            payload = None
        # Latency, limits and the prompt's real token count (calibrates the pacer's estimate).
        self.pacer.answered(ticket, raw.headers, prompt_chars=prompt_chars,
                            prompt_tokens=usage_from(payload).input_tokens if isinstance(payload, dict) else 0)
        if payload is None:
            raise _BadOutput("The model returned a malformed response.", Usage())
        tier = payload.get("service_tier") if isinstance(payload, dict) else None
        return (*parse_answer(payload, options.schema), tier)


def request_body(messages: list[dict], options: CallOptions) -> dict:
    """The chat-completions body of one call: sent online, and as a batch input line's `body`."""
    body = {
        "model": options.model,
        "messages": messages,
        "response_format": response_format(options.schema),
        "max_completion_tokens": options.max_output_tokens,
    }
    caps = model_capabilities.get(options.model)
    if caps is not None and caps.reasoning and options.reasoning_effort:
        body["reasoning_effort"] = options.reasoning_effort
    if options.cache_key:
        body["prompt_cache_key"] = options.cache_key
    if options.service_tier:
        body["service_tier"] = options.service_tier
    return body


def parse_answer(payload, schema: type[pydantic.BaseModel]):
    """(parsed, usage, reported model) from a chat completion's JSON (an online reply or a batch output line's
    body); raises `_BadOutput` (transient, usage kept: it was billed) when it is not the requested structure."""
    usage = usage_from(payload) if isinstance(payload, dict) else Usage()
    try:
        choice = payload["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise _BadOutput("The model returned a malformed response.", usage) from None
    if choice.get("finish_reason") == "length":
        raise _BadOutput("The model's answer was cut off at the output budget.", usage)
    content = message.get("content")
    if not content:
        detail = "The model refused to answer." if message.get("refusal") else "The model returned no structured answer."
        raise _BadOutput(detail, usage)
    try:
        parsed = schema.model_validate_json(content)
    except pydantic.ValidationError:
        raise _BadOutput("The model's answer did not match the requested structure.", usage) from None
    reported = payload.get("model")
    return parsed, usage, reported if isinstance(reported, str) and reported else None


def flex_max_tries() -> int:
    from django.conf import settings

    return settings.CRYSTALLISE_FLEX_MAX_TRIES


@functools.cache
def response_format(schema: type[pydantic.BaseModel]) -> dict:
    """The strict JSON-schema response format for `schema`, built once per schema class."""
    strict = openai.pydantic_function_tool(schema)["function"]["parameters"]
    return {"type": "json_schema", "json_schema": {"name": schema.__name__, "schema": strict, "strict": True}}

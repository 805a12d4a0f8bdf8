"""The `mock` backend: deterministic, offline, free.

Answers come from simple text matching done by each app's mock answer
(which the app registers by its schema's name, `register_mock_answer`, when
Django loads it), so demos show plausible verdicts without a key. Every
result it produces is marked with this backend's name and costs nothing.
The test suite's OpenAI-compatible fake server uses the same answers
(`brain`), so the real SDK path gets predictable content too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from crystallise.llm.backends import MOCK
from crystallise.llm.base import CallOptions, LLMResult
from crystallise.tokens import Usage

MockAnswer = Callable[[list[dict]], dict]

# Schema (pydantic model) name → the function answering it, from chat messages.
_ANSWERS: dict[str, MockAnswer] = {}


def register_mock_answer(schema_name: str, answer: MockAnswer) -> None:
    """Answer prompts whose schema is called `schema_name` with `answer(messages)`.

    Apps register theirs in `AppConfig.ready()`; the test fake server, which
    runs without Django, registers the apps' answers itself.
    """
    _ANSWERS[schema_name] = answer


def brain(schema_name: str, messages: list[dict]) -> dict | None:
    """The deterministic answer for a registered schema, or None."""
    answer = _ANSWERS.get(schema_name)
    return None if answer is None else answer(messages)


class MockClient:
    backend = MOCK.name

    @classmethod
    def create(cls, **_: object) -> MockClient:
        return cls()

    async def complete(self, messages: list[dict], options: CallOptions) -> LLMResult:
        answer = brain(options.schema.__name__, messages)
        if answer is None:
            raise LookupError(f"The mock backend cannot answer {options.schema.__name__}.")
        # Yield to the loop, as a network call would: keeps cancellation and
        # progress reporting behaving the same as with the real backend.
        await asyncio.sleep(0)
        return LLMResult(parsed=options.schema.model_validate(answer), usage=Usage(), backend=self.backend)

    async def aclose(self) -> None:
        return None

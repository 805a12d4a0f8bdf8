"""The `mock` backend: deterministic, offline, free.

Answers come from simple text matching done by each app's `mock_answer`
(registered below by the schema's name), so demos show plausible verdicts
without a key. Every result it produces is marked `llm_backend: "mock"`
and costs nothing. The test suite's OpenAI-compatible fake server uses the
same answers (`brain`), so the real SDK path gets predictable content too.
"""

from __future__ import annotations

import asyncio
import importlib

from crystallise.llm.base import CallOptions, LLMResult
from crystallise.tokens import Usage

# Schema (pydantic model) name → "module:function" answering it. Imported
# lazily: the fake server uses `brain` without Django being configured.
RESPONDERS = {
    "ScreeningDecision": "screening.prompts:mock_answer",
    "ConsolidatedCriteria": "criteria.prompts:mock_answer",
    "IndexedRecord": "indexer.prompts:mock_answer",
}


def brain(schema_name: str, messages: list[dict]) -> dict | None:
    """The deterministic answer for a known schema, or None."""
    target = RESPONDERS.get(schema_name)
    if target is None:
        return None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)(messages)


class MockClient:
    backend = "mock"

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

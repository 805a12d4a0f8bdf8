"""Live tests against the real provider: skipped unless a key is set.

CRYSTALLISE_OPENAI_API_KEY=sk-... pytest tests/integration -v
(they honour CRYSTALLISE_OPENAI_BASE_URL).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from crystallise.llm import RetryPolicy, make_client
from crystallise.llm.base import CallOptions
from screening import prompts

KEY = os.environ.get("CRYSTALLISE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
pytestmark = pytest.mark.skipif(not KEY, reason="no OpenAI key in the environment")


def test_live_screening_call_returns_structured_verdicts(settings):
    settings.CRYSTALLISE_OPENAI_BASE_URL = os.environ.get("CRYSTALLISE_OPENAI_BASE_URL") or None
    criteria = {"inclusion": ["randomized controlled trial"], "exclusion": ["animal study"]}
    messages = prompts.messages_for(
        prompts.system_prompt(criteria), "Sumatriptan for migraine",
        "A randomized, double-blind, placebo-controlled trial of sumatriptan in 500 adults with migraine.", [],
    )

    async def go():
        client = make_client(api_key=KEY, backend="openai", retry=RetryPolicy(max_attempts=3, timeout=60))
        try:
            return await client.complete(messages, CallOptions(model="gpt-5-nano", schema=prompts.decision_schema(("I1", "E1")),
                                                               max_output_tokens=600))
        finally:
            await client.aclose()

    result = asyncio.run(go())
    verdicts = {cid: v.verdict for cid, v in result.parsed.verdicts}
    assert verdicts.get("I1") == "met"
    assert result.usage.input_tokens > 0

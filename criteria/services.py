"""Criteria consolidation: dedupe, one structured LLM call, server-side quality filter.

Errors from the provider surface as `LLMError`, which the exception handler
maps to HTTP once: a rejected key is `400 auth` (the caller's key is bad, not
our upstream), an exhausted rate limit `429 rate_limit`, timeouts and 5xx
after retries `502 upstream`. An answer that does not fit the schema after
all retries is not an error: it is a 200 with empty lists and one `schema`
warning (and its tokens are still reported, since they were billed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from criteria import prompts
from criteria.duplicates import is_near_duplicate, normalise
from crystallise.auth import Caller
from crystallise.config import model_capabilities
from crystallise.errors import Category, LLMError
from crystallise.llm import make_client
from crystallise.llm.backends import get_backend
from crystallise.llm.base import CallOptions
from crystallise.preflight import preflight
from crystallise.tokens import Usage, count_message_tokens, estimate_cost_usd

KINDS = ("inclusion", "exclusion")


def output_budget(n_criteria: int) -> int:
    """Max output tokens: about one proposal of ~120 tokens per unique criterion, plus minimal reasoning."""
    return 400 + 120 * n_criteria


@dataclass
class Deduplicated:
    unique: list[tuple[int, str, str]]  # (input index, kind, text) sent to the LLM
    # Input index of a kept criterion → indexes of its dropped duplicates.
    duplicates: dict[int, list[int]] = field(default_factory=dict)


def criteria_deduplicate(*, criteria: list[dict]) -> Deduplicated:
    """Drop exact and near-exact duplicates (same kind), remembering what they duplicate."""
    result = Deduplicated(unique=[])
    kept: list[tuple[int, str, str]] = []  # (index, kind, normalised)
    for index, criterion in enumerate(criteria):
        kind, norm = criterion["kind"], normalise(criterion["text"])
        twin = next((i for i, k, n in kept if k == kind and is_near_duplicate(n, norm)), None)
        if twin is not None:
            result.duplicates.setdefault(twin, []).append(index)
            continue
        kept.append((index, kind, norm))
        result.unique.append((index, kind, criterion["text"].strip()))
    return result


def criteria_consolidate(
    *,
    caller: Caller,
    model: str | None,
    research_question: str,
    criteria: list[dict],
    min_confidence: float,
    max_estimated_cost_usd: Decimal | None,
    request_openai_key: str | None,
) -> dict[str, Any]:
    """The consolidated lists, warnings, usage and cost (the response body)."""
    deduped = criteria_deduplicate(criteria=criteria)
    messages = prompts.messages_for(research_question, deduped.unique)
    budget = output_budget(len(deduped.unique))
    checked = preflight(
        caller=caller, model=model, request_openai_key=request_openai_key, cap=max_estimated_cost_usd,
        estimate=lambda m: estimate_cost_usd(m, input_tokens=count_message_tokens(messages), output_tokens=budget),
        advice="Raise the cap, send fewer criteria, or pick a cheaper model.",
    )
    model, backend, resolved = checked.model, checked.backend.name, checked.key
    options = CallOptions(
        model=model,
        schema=prompts.ConsolidatedCriteria,
        max_output_tokens=budget,
        reasoning_effort="minimal" if model_capabilities[model].reasoning else None,
    )
    parsed, usage, used_backend = asyncio.run(_complete(resolved.key, backend, messages, options))
    body: dict[str, Any] = {"inclusion": [], "exclusion": [], "warnings": []}
    if parsed is None:
        body["warnings"].append({
            "reason": "schema",
            "message": "The model's answer did not match the expected structure after all retries.",
            "proposal": None,
        })
    else:
        for kind in KINDS:
            for draft in getattr(parsed, kind):
                proposal, warning = check_proposal(draft, n_inputs=len(criteria), min_confidence=min_confidence)
                if warning is not None:
                    body["warnings"].append(warning)
                else:
                    proposal["merged_from"] = _with_duplicates(proposal["merged_from"], deduped.duplicates)
                    body[kind].append(proposal)
    body.update(
        usage=usage.as_dict(),
        cost_usd=get_backend(used_backend).cost(model, usage),
        llm_backend=used_backend,
    )
    return body


async def _complete(api_key, backend, messages, options) -> tuple[prompts.ConsolidatedCriteria | None, Usage, str]:
    client = make_client(api_key=api_key, backend=backend, concurrency=1)
    limit = settings.CRYSTALLISE_SYNC_TIMEOUT
    try:
        async with asyncio.timeout(limit):
            result = await client.complete(messages, options)
    except TimeoutError:
        raise LLMError(f"The model provider gave no usable answer within this request's time limit ({limit:g} s, "
                       "retries included). Try again later.", category=Category.UPSTREAM, permanent=False) from None
    except LLMError as exc:
        if not exc.bad_output:
            raise
        return None, getattr(exc, "usage", None) or Usage(), client.backend
    finally:
        await client.aclose()
    return result.parsed, result.usage, result.backend


def check_proposal(draft: prompts.ProposalDraft, *, n_inputs: int, min_confidence: float) -> tuple[dict, dict | None]:
    """(proposal, None) when it passes the quality filter, else (_, warning)."""
    raw = draft.raw if draft.raw is not None else draft.model_dump()
    problem = draft.invalid
    if problem is None:
        if not isinstance(draft.text, str) or not draft.text.strip():
            problem = "text is missing or empty"
        elif draft.rationale is None:
            problem = "rationale is missing"
        elif draft.confidence is None or not 0 <= draft.confidence <= 1:
            problem = "confidence is missing or outside 0..1"
        elif not draft.merged_from:
            problem = "merged_from is empty: the proposal points at no input criterion"
        elif any(not 0 <= i < n_inputs for i in draft.merged_from):
            problem = f"merged_from points outside the {n_inputs} input criteria"
    if problem is not None:
        return {}, {"reason": "schema", "message": f"Malformed proposal dropped: {problem}.", "proposal": raw}
    text = draft.text.strip()
    if len(text) > prompts.MAX_PROPOSAL_CHARS:
        return {}, {"reason": "length", "proposal": raw,
                    "message": f"Proposal dropped: {len(text)} characters, above the {prompts.MAX_PROPOSAL_CHARS} limit."}
    if draft.confidence < min_confidence:
        return {}, {"reason": "confidence", "proposal": raw,
                    "message": f"Proposal dropped: confidence {draft.confidence:g} is below min_confidence {min_confidence:g}."}
    proposal = {"text": text, "rationale": draft.rationale.strip(), "merged_from": sorted(set(draft.merged_from)),
                "confidence": float(draft.confidence)}
    return proposal, None


def _with_duplicates(merged_from: list[int], duplicates: dict[int, list[int]]) -> list[int]:
    out = set(merged_from)
    for index in merged_from:
        out.update(duplicates.get(index, ()))
    return sorted(out)

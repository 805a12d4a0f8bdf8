"""The checks every LLM entry point makes before anything is stored or billed.

In order: the model is one the service offers; the configured backend; an
OpenAI key when that backend needs one (request header, else the server's);
the cost estimate; the request's cap and the API key's monthly budget. The
job endpoints, the synchronous indexer, criteria consolidation and the
command line all go through `preflight`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

from crystallise.auth import Caller
from crystallise.config import validate_model
from crystallise.jobs.budget import check_budget
from crystallise.keyvault import ResolvedKey, resolve_openai_key
from crystallise.llm.backends import Backend, get_backend


@dataclass(frozen=True)
class Preflight:
    model: str
    backend: Backend
    key: ResolvedKey
    estimate: Decimal
    # What `replay` found (an earlier job with the same Idempotency-Key): no estimate or budget was checked.
    replayed: Any = None


def preflight(
    *,
    caller: Caller | None,
    model: str | None,
    request_openai_key: str | None,
    estimate: Callable[[str], Decimal],
    cap: Decimal | None,
    advice: str,
    replay: Callable[[], Any] | None = None,
) -> Preflight:
    """Check a request before it is stored or sent; raises the API's errors (400 model/auth, 402 budget).

    `estimate(model)` gives the worst-case cost in USD. `replay()`, checked once the
    key is known and before the cost, returns an earlier answer to the same request
    (idempotent retries must not be refused for a budget they already spent).
    """
    model = validate_model(model)
    backend = get_backend(settings.CRYSTALLISE_LLM_BACKEND)
    key = resolve_openai_key(request_openai_key, backend=backend.name)
    if replay is not None and (earlier := replay()) is not None:
        return Preflight(model, backend, key, Decimal("0"), replayed=earlier)
    cost = estimate(model)
    check_budget(caller=caller, estimate=cost, cap=cap, advice=advice)
    return Preflight(model, backend, key, cost)

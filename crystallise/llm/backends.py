"""The LLM backends the service can run on, with the properties the rest of
the code asks about: whether calls are billed, whether they need an OpenAI
key. Nothing else compares backend names; a new backend is one entry here
(plus its client class).

This module imports nothing from Django or the SDK, so settings can validate
`CRYSTALLISE_LLM_BACKEND` against it at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crystallise.tokens import Usage


@dataclass(frozen=True)
class Backend:
    name: str
    # Calls cost money: estimates, budgets, caps and `cost_usd` apply.
    billable: bool
    # Calls need an OpenAI key (request header or server key).
    needs_key: bool
    # Answers come from no language model (demos): reports must not present them as a model's.
    offline: bool
    # "module:Class" of the client; imported on first use (the SDK takes about a second to import).
    client_path: str
    description: str
    # "module:Class" of its Batch API client (the batch lane).
    batch_client_path: str

    def client_class(self):
        return _load(self.client_path)

    def batch_client_class(self):
        return _load(self.batch_client_path)

    def cost(self, model: str, usage: Usage, tier: str = "default") -> Decimal:
        """What `usage` of `model` costs on this backend, billed in `tier` (default, batch, flex)."""
        if not self.billable:
            return Decimal("0")
        from crystallise.tokens import cost_usd

        return cost_usd(model, usage, tier)


OPENAI = Backend(
    name="openai", billable=True, needs_key=True, offline=False, client_path="crystallise.llm.openai_client:OpenAIClient",
    description="the official SDK against OpenAI or any OpenAI-compatible endpoint",
    batch_client_path="crystallise.llm.batches:OpenAIBatches",
)
MOCK = Backend(
    name="mock", billable=False, needs_key=False, offline=True, client_path="crystallise.llm.mock:MockClient",
    description="offline, deterministic, free answers for demos",
    batch_client_path="crystallise.llm.batches:MockBatches",
)


def _load(path: str):
    module, name = path.split(":")
    return getattr(import_module(module), name)


BACKENDS: dict[str, Backend] = {b.name: b for b in (OPENAI, MOCK)}


def get_backend(name: str) -> Backend:
    """The backend called `name`; KeyError for an unknown one (settings refuse those at start)."""
    return BACKENDS[name]


def is_billable(name: str) -> bool:
    backend = BACKENDS.get(name)
    # An unknown name (a row written by a backend since removed) is treated as billed: never under-report cost.
    return backend is None or backend.billable

"""The LLM layer: the only code that talks to a model provider.

`make_client()` returns an object with one coroutine, `complete()`, that
turns chat messages and a pydantic schema into a parsed answer plus the
usage the provider reported. The backends that share that interface, and
their properties, are listed in `crystallise.llm.backends`.

The names below are loaded on first use (PEP 562): settings import the
backend registry at start, which must not pull in the SDK or Django.
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["LLMClient", "LLMResult", "RetryPolicy", "make_client"]

_HOMES = {"LLMClient": "base", "LLMResult": "base", "RetryPolicy": "base", "make_client": "factory"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"crystallise.llm.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The readers of environment variables that settings use: each refuses a value that cannot be
what the variable names, with a message naming it (never a silent default)."""

from __future__ import annotations

import os

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def env_text(name: str) -> str | None:
    """The variable stripped of spaces; None when unset or blank."""
    value = os.environ.get(name)
    return None if value is None or not value.strip() else value.strip()


def env_bool(name: str, default: bool) -> bool:
    """true/false (also 1/0, yes/no, on/off, any case)."""
    raw = env_text(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def _env_number(name: str, default, low, high, parse, kind: str):
    raw = env_text(name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # the comparison is also false for NaN
        raise ImproperlyConfigured(f"{name} must be {kind} between {low} and {high}, not {raw!r}.")
    return value


def env_int_between(name: str, default: int, low: int, high: int) -> int:
    """A whole number in [low, high]."""
    return _env_number(name, default, low, high, int, "a whole number")


def env_float_between(name: str, default: float, low: float, high: float) -> float:
    """A number (seconds, say) in [low, high]."""
    return _env_number(name, default, low, high, float, "a number")


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated variable; spaces around items and empty items are dropped ("a, b," is a and b)."""
    items = [item.strip() for item in env.list(name, default=default)]
    return [item for item in items if item]

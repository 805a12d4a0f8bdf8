"""The fake provider's rate limits: requests and tokens per minute, enforced and advertised as an OpenAI
account does.

Each limit is a token bucket holding `burst_seconds` of its rate (OpenAI
enforces its per-minute limits over short windows). A request counts as one
request and as its prompt tokens plus its output budget
(`max_completion_tokens`, or `max_tokens`) against tokens per minute, reserved
on arrival as OpenAI does. Every answer, refusals included, carries the
`x-ratelimit-limit-*`, `-remaining-*` and `-reset-*` headers of each limit
that is set; a refused request (429) gets `retry-after` / `retry-after-ms`:
the time until it would fit. `remaining` is the bucket's level, what it would
admit now (at most `burst_seconds` of the rate), where an account counts down
from its per-minute limit: a client reading it is held back sooner here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any


def duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* style: "120ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(seconds // 60)}m{seconds % 60:.0f}s"


def output_budget(body: dict) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True)
class Refusal:
    wait: float
    message: str


class Buckets:
    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}  # limit name -> (level, when)

    def admit(self, cfg: Any, headers: dict, tokens: int, model: str) -> Refusal | None:
        """Charge one request of `tokens` tokens; None if admitted, else why not and for how long."""
        now = time.monotonic()
        levels, refused = {}, None
        for name, per_minute, cost in (("requests", cfg.rpm, 1), ("tokens", cfg.tpm, tokens)):
            if per_minute is None:
                continue
            rate = max(per_minute, 1e-6) / 60
            capacity = max(float(cost), 1.0, rate * cfg.burst_seconds)
            level = capacity if name not in self._state else min(
                capacity, self._state[name][0] + (now - self._state[name][1]) * rate)
            levels[name] = (per_minute, level, capacity, rate, cost)
            if level < cost:
                wait = (cost - level) / rate
                if refused is None or wait > refused[0]:
                    refused = (wait, name, per_minute, capacity - level, cost)
        for name, (per_minute, level, capacity, rate, cost) in levels.items():
            if refused is None:
                level -= cost
            self._state[name] = (level, now)
            headers[f"x-ratelimit-limit-{name}"] = f"{per_minute:g}"
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, int(level)))
            headers[f"x-ratelimit-reset-{name}"] = duration((capacity - level) / rate)
        if refused is None:
            return None
        wait, name, per_minute, used, cost = refused
        if name == "requests":
            message = (f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
                       f"Limit {per_minute:g}. Please try again in {duration(wait)}.")
        else:
            message = (f"Rate limit reached for {model} in organization org-fake on tokens per min (TPM): "
                       f"Limit {per_minute:g}, Used {used:.0f}, Requested {cost}. Please try again in {duration(wait)}.")
        return Refusal(wait=wait, message=message)

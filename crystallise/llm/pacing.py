"""Client-side pacing below the provider's rate limit.

Hammering and backing off wastes requests and, with many calls in flight,
turns one 429 into a thundering herd. Instead the pacer learns the
requests-per-minute limit from `x-ratelimit-limit-requests` and spaces
request starts just under it; a 429 pauses every call of the client until
its `Retry-After` has passed.
"""

from __future__ import annotations

import asyncio
import time

# Stay a little under the advertised limit: clocks and windows differ.
HEADROOM = 0.97


def parse_duration(value: str | None) -> float | None:
    """OpenAI's reset/retry formats: "1.5", "120ms", "6m0s", "1s"."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    total, number = 0.0, ""
    i = 0
    try:
        while i < len(value):
            ch = value[i]
            if ch.isdigit() or ch == ".":
                number += ch
                i += 1
                continue
            if value.startswith("ms", i):
                total += float(number) / 1000
                i += 2
            elif ch == "s":
                total += float(number)
                i += 1
            elif ch == "m":
                total += float(number) * 60
                i += 1
            elif ch == "h":
                total += float(number) * 3600
                i += 1
            else:
                return None
            number = ""
    except ValueError:
        return None
    return total if not number else None


def retry_after_seconds(headers) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    return parse_duration(headers.get("retry-after"))


class Pacer:
    def __init__(self) -> None:
        self.interval = 0.0  # seconds between request starts; 0 = unpaced
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    async def wait_turn(self) -> None:
        while True:
            now = time.monotonic()
            pause = self._paused_until - now
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self.interval <= 0:
                return
            async with self._lock:
                now = time.monotonic()
                slot = max(self._next_slot, now)
                self._next_slot = slot + self.interval
            delay = slot - now
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= self._paused_until:
                return

    def observe(self, headers) -> None:
        if headers is None:
            return
        limit = headers.get("x-ratelimit-limit-requests")
        if limit:
            try:
                rpm = float(limit)
            except ValueError:
                return
            if rpm > 0:
                self.interval = 60.0 / (rpm * HEADROOM)

    def rate_limited(self, retry_after: float | None) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + (retry_after or 1.0))

"""Client-side pacing under the provider's advertised limits, and how many calls to keep in flight.

Hammering and backing off wastes requests and, with many calls in flight,
turns one 429 into a thundering herd. Instead the pacer reads the limits the
provider sends on every answer (`x-ratelimit-limit-requests`,
`-remaining-requests`, `-reset-requests` and the `-tokens` trio) and spaces
request starts just under both: requests per minute, and tokens per minute,
each call counted as its prompt (estimated from its length, calibrated on the
usage the provider reports) plus its output budget, as providers reserve it.

Of the key's limit the pacer uses its `share` (1 for a client alone; the
shared limiter, `crystallise.ratelimit`, sets it for jobs that share a key).
A 429 pauses every call of the client until its `Retry-After` has passed and
lowers the rate a little (recovering over the next answers); a `remaining`
short of one more call pauses until one more fits.

`target_concurrency()` says how many calls to keep in flight: the allowed
rate times the latency (Little's law) with a margin, never above the
ceiling. Before the first answer it starts at `INITIAL_WINDOW` and doubles
every `SLOW_START_SECONDS` up to `SLOW_START_MAX` (a slow provider tells nothing for a while);
a provider that answers without advertising limits gets the ceiling, and a
429 without limits halves the window (then +1 per answer).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import time
from dataclasses import dataclass

# Stay a little under the advertised limit: windows and estimates differ.
HEADROOM = 0.97
# Request starts may bunch up by this much (seconds of the rate): absorbs timer jitter, never a real burst.
BURST_SECONDS = 0.1
INITIAL_WINDOW = 16
SLOW_START_SECONDS = 0.5
# Blind growth stops here: past it a provider that has not answered yet gets no bigger burst.
SLOW_START_MAX = 128
# In flight = rate × latency × margin (+ a few): retries and latency spread keep some calls longer.
WINDOW_MARGIN = 1.25
WINDOW_SLACK = 4
# A 429 lowers the rate by this factor (at most once a second: one burst of refusals is one signal, and
# not below BACKOFF_FLOOR); answers give it back at BACKOFF_RECOVERY per second.
BACKOFF_STEP = 0.9
BACKOFF_FLOOR = 0.25
BACKOFF_RECOVERY = 0.1
# Until answers calibrate it: o200k tokens per character of English prompt, on the safe side.
INITIAL_TOKENS_PER_CHAR = 0.35


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
    """How long the provider asks to wait: `retry-after-ms` (OpenAI's, precise) before `Retry-After`
    (seconds or an HTTP date, RFC 9110); None when neither can be read."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    seconds = parse_duration(raw)
    if seconds is None and raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())
    return seconds if seconds is None or (math.isfinite(seconds) and seconds >= 0) else None


def _number(headers, name: str) -> float | None:
    raw = headers.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 and math.isfinite(value) else None


@dataclass(frozen=True)
class Advertised:
    """The `x-ratelimit-*` headers of one answer (None where absent)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def from_headers(cls, headers) -> Advertised:
        return cls(
            limit_requests=_number(headers, "x-ratelimit-limit-requests"),
            remaining_requests=_number(headers, "x-ratelimit-remaining-requests"),
            reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
            limit_tokens=_number(headers, "x-ratelimit-limit-tokens"),
            remaining_tokens=_number(headers, "x-ratelimit-remaining-tokens"),
            reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
        )


class Pacer:
    """Paces one client's request starts; all of it runs on the client's event loop (no thread locks)."""

    def __init__(self, ceiling: int = 512) -> None:
        self.ceiling = max(1, ceiling)
        # The key's limits per minute (learned from answers, or handed over by the shared limiter).
        self.limit_requests: float | None = None
        self.limit_tokens: float | None = None
        self.share = 1.0
        # The provider advertised the limits to this client (rather than the shared limiter passing them on).
        self.learned = False
        # Monotonic time past which the share has lapsed (shared limiter): nothing starts until renewed.
        self.share_expires = math.inf
        self.backoff = 1.0
        self._backoff_at = -math.inf  # when it was last lowered
        self._recovered_at = 0.0
        self.latency: float | None = None  # moving average of answered calls (s)
        self.tokens_per_char = INITIAL_TOKENS_PER_CHAR
        self.cost_average: float | None = None  # tokens counted per call
        # Totals, read by the shared limiter to report what this client used.
        self.requests = 0
        self.tokens = 0.0
        self.refused = 0
        self._request_tat = 0.0  # GCRA "theoretical arrival times"
        self._token_tat = 0.0
        self._turn = asyncio.Lock()  # FIFO: one waiting call at a time works out its start
        self._paused_until = 0.0
        self._in_flight: dict[int, tuple[float, bool]] = {}  # ticket -> (started, paced under a known limit)
        self._ticket = 0
        self._first_call: float | None = None
        self._aimd_window: float | None = None  # set by a 429 while no limit is known
        self._aimd_at = -math.inf
        self._unadvertised = False  # an answer came without any limit

    # --- rates -------------------------------------------------------------
    def requests_per_second(self) -> float | None:
        if self.limit_requests is None:
            return None
        return self.limit_requests / 60 * HEADROOM * self.share * self.backoff

    def tokens_per_second(self) -> float | None:
        if self.limit_tokens is None:
            return None
        return self.limit_tokens / 60 * HEADROOM * self.share * self.backoff

    def calls_per_second(self) -> float | None:
        """The allowed call rate: the tighter of the request and the token limit."""
        rps, tps = self.requests_per_second(), self.tokens_per_second()
        if tps is not None:
            per_call = tps / max(1.0, self.cost_average or 1.0)
            rps = per_call if rps is None else min(rps, per_call)
        return rps

    def target_concurrency(self) -> int:
        now = time.monotonic()
        rate = self.calls_per_second()
        if rate is not None:
            # Before the first answer the latency is at least the age of the oldest call in flight.
            oldest = now - next(iter(self._in_flight.values()), (now, False))[0]
            target = rate * max(self.latency or 0.0, oldest) * WINDOW_MARGIN + WINDOW_SLACK
        elif self._aimd_window is not None:
            target = self._aimd_window
        elif self._unadvertised:
            target = self.ceiling
        else:
            started = self._first_call if self._first_call is not None else now
            # Blind: this client's share of it (jobs starting together on one key start as one).
            target = self.share * min(SLOW_START_MAX, INITIAL_WINDOW * 2 ** ((now - started) / SLOW_START_SECONDS))
        return max(1, min(self.ceiling, int(target)))

    # --- one call ----------------------------------------------------------
    def estimate_tokens(self, prompt_chars: int, max_output_tokens: int) -> float:
        return prompt_chars * self.tokens_per_char + max_output_tokens

    async def acquire(self, cost_tokens: float) -> int:
        """Wait for this call's turn; returns a ticket for `answered`/`failed`.

        Calls take turns (first come, first served) and each works out its start at the rates of the
        moment it is next in line, so a lowered share or rate holds back every call still waiting, not
        only the ones that arrive after it."""
        if self._first_call is None:
            self._first_call = time.monotonic()
        async with self._turn:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                if now >= self.share_expires or self.share <= 0:
                    await asyncio.sleep(0.05)  # no share, or it lapsed: nothing starts until the limiter grants one
                    continue
                rps, tps = self.requests_per_second(), self.tokens_per_second()
                start = max(now, self._request_tat - BURST_SECONDS if rps else now,
                            self._token_tat - BURST_SECONDS if tps else now)
                if start <= now:
                    break
                await asyncio.sleep(start - now)
            if rps:
                self._request_tat = max(self._request_tat, now) + 1 / rps
            if tps:
                self._token_tat = max(self._token_tat, now) + cost_tokens / tps
        self.requests += 1
        self.tokens += cost_tokens
        self.cost_average = cost_tokens if self.cost_average is None else 0.98 * self.cost_average + 0.02 * cost_tokens
        self._ticket += 1
        self._in_flight[self._ticket] = (time.monotonic(), self.limit_requests is not None or self.limit_tokens is not None)
        return self._ticket

    def answered(self, ticket: int, headers, *, prompt_chars: int = 0, prompt_tokens: int = 0) -> None:
        call = self._in_flight.pop(ticket, None)
        if call is not None:
            elapsed = time.monotonic() - call[0]
            self.latency = elapsed if self.latency is None else 0.9 * self.latency + 0.1 * elapsed
        if prompt_chars > 0 and prompt_tokens > 0:
            # A moving average: per-call errors even out, HEADROOM covers what is left.
            self.tokens_per_char = 0.95 * self.tokens_per_char + 0.05 * prompt_tokens / prompt_chars
        if self.backoff < 1.0:
            now = time.monotonic()
            self.backoff = min(1.0, self.backoff + BACKOFF_RECOVERY * (now - max(self._recovered_at, self._backoff_at)))
            self._recovered_at = now
        if self._aimd_window is not None:
            self._aimd_window = min(float(self.ceiling), self._aimd_window + 1)
        if headers is not None and self.limit_requests is None and self.limit_tokens is None:
            self._unadvertised = True
        self.observe(headers)

    def failed(self, ticket: int, headers, *, rate_limited: bool, retry_after: float | None) -> None:
        call = self._in_flight.pop(ticket, None)
        if rate_limited:
            self.refused += 1
            self._paused_until = max(self._paused_until, time.monotonic() + (retry_after or 1.0))
            now = time.monotonic()
            # Refusals of calls sent before any limit was known only teach the limit; past it, slow down.
            if (call is None or call[1]) and now - self._backoff_at >= 1.0:
                self.backoff = max(BACKOFF_FLOOR, self.backoff * BACKOFF_STEP)
                self._backoff_at = self._recovered_at = now
            if self.limit_requests is None and self.limit_tokens is None and now - self._aimd_at >= 1.0:
                self._aimd_at = now
                self._aimd_window = max(1.0, (self._aimd_window or float(self.target_concurrency())) / 2)
        self.observe(headers)

    def observe(self, headers) -> None:
        if headers is None:
            return
        seen = Advertised.from_headers(headers)
        if seen.limit_requests or seen.limit_tokens:
            self.set_limits(seen.limit_requests, seen.limit_tokens)
            self.learned = True
        # Nothing left in the provider's window when this call arrived: wait until one more call fits
        # (what is missing at the limit's rate, never past the advertised reset).
        now = time.monotonic()
        for remaining, needed, limit, reset in (
            (seen.remaining_requests, 1.0, seen.limit_requests, seen.reset_requests),
            (seen.remaining_tokens, self.cost_average or 0.0, seen.limit_tokens, seen.reset_tokens),
        ):
            if remaining is not None and limit and remaining < needed:
                wait = (needed - remaining) / (limit / 60)
                self._paused_until = max(self._paused_until, now + min(wait, reset or wait, 60.0))

    def set_limits(self, requests: float | None, tokens: float | None) -> None:
        """The key's limits per minute. Calls started before any limit was known count against it: the
        pacer goes on as if they had been paced, so a blind start is never followed by a full-rate burst."""
        unknown = self.limit_requests is None and self.limit_tokens is None
        self.limit_requests, self.limit_tokens = requests, tokens
        if unknown and self._first_call is not None:
            rps, tps = self.requests_per_second(), self.tokens_per_second()
            if rps:
                self._request_tat = max(self._request_tat, self._first_call + self.requests / rps)
            if tps:
                self._token_tat = max(self._token_tat, self._first_call + self.tokens / tps)

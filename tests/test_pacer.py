"""The pacer's spacing of request starts, and what a job tells the shared limiter it wants."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC

import pytest

from crystallise.llm.pacing import HEADROOM, Pacer
from crystallise.ratelimit.shared import SharedLimit


def started_at(pacer: Pacer, calls: int, change=None, change_after: float = 0.0) -> list[float]:
    """Start `calls` calls at once through the pacer (each waits for its turn); seconds from the first
    start to each start. `change(pacer)` runs `change_after` seconds in."""

    async def go() -> list[float]:
        times: list[float] = []

        async def one() -> None:
            await pacer.acquire(10)
            times.append(time.monotonic())

        async def later() -> None:
            await asyncio.sleep(change_after)
            change(pacer)

        t0 = time.monotonic()
        tasks = [asyncio.create_task(one()) for _ in range(calls)]
        if change is not None:
            tasks.append(asyncio.create_task(later()))
        await asyncio.gather(*tasks)
        return [t - t0 for t in sorted(times)]

    return asyncio.run(go())


def test_calls_start_at_the_advertised_rate_less_the_headroom():
    pacer = Pacer(ceiling=64)
    pacer.set_limits(1200, None)  # 20/s
    times = started_at(pacer, 30)[3:]  # past the first 0.1 s of the rate, which may start at once
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 20 * HEADROOM * 1.05
    assert rate >= 20 * HEADROOM * 0.85


def test_a_lowered_share_holds_back_the_calls_already_waiting():
    # 100 calls wait at ~97/s; 0.2 s in, the shared limiter lowers this job's share to 1 %: the calls
    # still waiting go at the new rate (~1/s), not at the rate of the moment they started waiting.
    pacer = Pacer(ceiling=128)
    pacer.set_limits(6000, None)

    def lower(p: Pacer) -> None:
        p.share = 0.01

    async def go() -> tuple[int, int]:
        started: list[float] = []

        async def one() -> None:
            await pacer.acquire(10)
            started.append(time.monotonic())

        tasks = [asyncio.create_task(one()) for _ in range(100)]
        await asyncio.sleep(0.2)
        lower(pacer)
        lowered_at = time.monotonic()
        await asyncio.sleep(0.6)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return sum(t <= lowered_at for t in started), sum(t > lowered_at for t in started)

    before, after = asyncio.run(go())
    assert before >= 5  # it was running at the full rate
    # At 97/s the 0.6 s after would have started ~58 more; at 0.97/s at most the one in turn and one more.
    assert after <= 2


def test_a_raised_share_speeds_up_the_calls_already_waiting():
    pacer = Pacer(ceiling=64)
    pacer.set_limits(60, None)  # ~1/s
    pacer.share = 1.0

    def raise_limit(p: Pacer) -> None:
        p.set_limits(6000, None)

    times = started_at(pacer, 20, raise_limit, change_after=0.05)
    # Without the change 20 calls would take ~19 s; with it, the one waiting for its slot, then ~97/s.
    assert times[-1] < 2.0


class Holder:
    """A job's side of the limiter as the online lane builds it, without a database."""

    def __init__(self, backlog: bool) -> None:
        self.pacer = Pacer(ceiling=512)
        self.pacer.set_limits(6000, None)
        self.pacer.share = 0.25
        self.backlog = backlog
        self.shared = SharedLimit(self.pacer, "f" * 64, backlog=lambda: self.backlog)
        self.shared._held_since = time.monotonic() - 10

    def demand_after(self, calls: int, seconds: float = 0.2) -> float | None:
        self.shared.demand()  # the start of the interval
        self.pacer.requests += calls
        time.sleep(seconds)
        return self.shared.demand()


def test_a_job_with_work_held_back_asks_for_more_even_while_it_uses_little():
    # Ramping up: few calls out yet (its window grows with the latency it measures), papers queued.
    assert Holder(backlog=True).demand_after(calls=1) is None


def test_a_job_with_nothing_waiting_reports_what_it_uses():
    # Its last papers: no work waiting, far under its share. It keeps what it uses (with a margin).
    demand = Holder(backlog=False).demand_after(calls=1)
    used = 1 / 0.2 / (6000 / 60 * HEADROOM)
    assert demand == pytest.approx(used * 1.5 + 0.01, rel=0.2)
    # One using its whole share is held back by it, backlog or not.
    assert Holder(backlog=False).demand_after(calls=5) is None


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "1m30s"}, 90.0),
    # Both: OpenAI's millisecond header is the precise one.
    ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
    # An unreadable millisecond value falls back to Retry-After.
    ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
    ({"retry-after-ms": "-5", "retry-after": "3"}, 3.0),
    ({"retry-after": "tomorrow"}, None),
    ({}, None),
])
def test_retry_after_headers(headers, expected):
    from crystallise.llm.pacing import retry_after_seconds

    assert retry_after_seconds(headers) == expected


def test_retry_after_as_an_http_date():
    from datetime import datetime, timedelta
    from email.utils import format_datetime

    from crystallise.llm.pacing import retry_after_seconds

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= retry_after_seconds({"retry-after": later}) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds({"retry-after": past}) == 0.0

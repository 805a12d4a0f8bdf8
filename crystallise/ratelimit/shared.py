"""One job's side of the shared limiter: renews its lease and hands the share to its client's pacer.

The renewals run on the job's database thread (`db_call`), the pacer is
touched only on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable

from django.db import DatabaseError

from crystallise.llm.pacing import HEADROOM, Pacer
from crystallise.ratelimit import lease

logger = logging.getLogger(__name__)

# A holder using less than this part of its share is not held back by it: it reports what it uses.
SATURATED = 0.8
DEMAND_MARGIN = 1.5


class SharedLimit:
    def __init__(self, pacer: Pacer, fingerprint: str, backlog: Callable[[], bool] | None = None) -> None:
        self.pacer = pacer
        self.fingerprint = fingerprint
        # True while the job has work its calls-in-flight bound holds back (a bound sized on its share).
        self.backlog = backlog
        self.holder = uuid.uuid4().hex
        self._last: tuple[float, int, float] | None = None  # (when, requests, tokens) at the last renewal
        self._held_since: float | None = None  # when the current share (> 0) was first granted

    def demand(self) -> float | None:
        """The fraction of the key this holder showed it can use; None when its share holds it back.

        A job still ramping up (its calls in flight grow with the latency it measures) uses less than
        its share although it has work waiting: that is no sign it wants less, so it reports none."""
        now = time.monotonic()
        pacer, last = self.pacer, self._last
        self._last = (now, pacer.requests, pacer.tokens)
        if last is None or self._held_since is None or self._held_since > last[0] or pacer.share <= 0:
            return None
        if self.backlog is not None and self.backlog():
            return None
        elapsed = now - last[0]
        if elapsed <= 0:
            return None
        used = []
        if pacer.limit_requests:
            used.append((pacer.requests - last[1]) / elapsed / (pacer.limit_requests / 60 * HEADROOM))
        if pacer.limit_tokens:
            used.append((pacer.tokens - last[2]) / elapsed / (pacer.limit_tokens / 60 * HEADROOM))
        if not used:
            return None
        fraction = max(used)
        if fraction >= SATURATED * pacer.share * pacer.backoff:
            return None
        return min(1.0, fraction * DEMAND_MARGIN + 0.01)

    def learned_limits(self) -> tuple[float | None, float | None]:
        """The key's limits (requests, tokens per minute) as the provider advertised them to this job."""
        pacer = self.pacer
        return (pacer.limit_requests, pacer.limit_tokens) if pacer.learned else (None, None)

    async def renew(self, db_call) -> None:
        pacer = self.pacer
        asked = time.monotonic()
        learned = self.learned_limits()
        grant = await db_call(functools.partial(lease.renew, self.fingerprint, self.holder, demand=self.demand(),
                                                limit_requests=learned[0], limit_tokens=learned[1]))
        if not pacer.learned and (grant.limit_requests or grant.limit_tokens):
            pacer.set_limits(grant.limit_requests, grant.limit_tokens)
        if grant.share > 0 and (self._held_since is None or pacer.share <= 0):
            self._held_since = time.monotonic()
        pacer.share = grant.share
        # Our row expires LEASE_SECONDS after the database wrote it; stop using it a second before.
        pacer.share_expires = asked + lease.LEASE_SECONDS - 1.0

    async def start(self, db_call) -> None:
        """Take the lease before the first call; without the database the job runs on what it learns alone."""
        try:
            await self.renew(db_call)
        except DatabaseError:
            logger.warning("Taking a rate-limit lease failed; pacing on the provider's headers alone", exc_info=True)

    async def keep(self, db_call) -> None:
        """Renew until cancelled; a failed renewal (database down) is retried, the share lapses meanwhile."""
        while True:
            await asyncio.sleep(lease.RENEW_SECONDS)
            try:
                await self.renew(db_call)
            except DatabaseError:
                logger.warning("Renewing the rate-limit lease failed; retrying", exc_info=True)

    def release(self) -> None:
        """In the database thread: give the share back."""
        learned = self.learned_limits()
        try:
            lease.release(self.fingerprint, self.holder, limit_requests=learned[0], limit_tokens=learned[1])
        except DatabaseError:
            logger.warning("Releasing the rate-limit lease failed; it expires on its own", exc_info=True)

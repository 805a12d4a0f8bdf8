"""An adjustable bound on calls in flight: a semaphore whose size can change while it is held."""

from __future__ import annotations

import asyncio
from collections import deque


class Window:
    """Up to `limit` holders at once; waiters are served first come, first served.

    Shrinking never interrupts a holder: the extra ones finish and are not replaced.
    `close()` wakes every waiter with False (the run is stopping).
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self.closed = False
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> bool:
        if self.closed:
            return False
        if self.held < self.limit and not self._waiters:
            self.held += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def resize(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._wake()

    def close(self) -> None:
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def _wake(self) -> None:
        while self._waiters and self.held < self.limit and not self.closed:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                self.held += 1
                waiter.set_result(True)

"""Periodic work beside a long step, in a thread with its own database connection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connection

logger = logging.getLogger(__name__)


@contextmanager
def every(seconds: float, action: Callable[[], object], *, name: str) -> Iterator[None]:
    """Call `action` every `seconds` from a helper thread while the block runs (not at its start or end).

    The thread's database connection is closed when it stops: `connection` is per thread, and a
    connection left open would outlive the block.
    """
    done = threading.Event()

    def loop() -> None:
        try:
            while not done.wait(seconds):
                try:
                    action()
                except Exception:
                    # One failure (a dropped connection) must not stop the beats that follow: a job
                    # whose heartbeat stops looks orphaned and would be claimed a second time.
                    logger.warning("%s failed; trying again in %s s", name, seconds, exc_info=True)
                    connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()

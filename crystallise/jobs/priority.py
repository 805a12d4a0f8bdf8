"""The worker's CPU priority: jobs yield the CPU to the web process on a shared host."""

from __future__ import annotations

import logging
import os

from django.conf import settings

logger = logging.getLogger(__name__)


def yield_cpu_to_web() -> None:
    """Lower this process's CPU priority to CRYSTALLISE_WORKER_NICE (a no-op once there; never raises it)."""
    current = os.nice(0)
    wanted = settings.CRYSTALLISE_WORKER_NICE
    if wanted > current:
        try:
            os.nice(wanted - current)
        except OSError:  # not permitted here: run at the current priority
            logger.warning("Could not lower the worker's CPU priority to nice %s.", wanted)

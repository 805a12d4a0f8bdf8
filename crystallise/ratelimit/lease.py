"""Leasing shares of a provider key's limit in the database, shared by every process and host.

Each job run holds one lease row per key and renews it every RENEW_SECONDS
in one short transaction: one write (its own row) however many calls it
makes. Renewals of one key are serialised (a transaction-scoped advisory
lock on PostgreSQL; SQLite serialises writers itself), read every live
lease of the key, and give the renewing holder

    min(its fair share, 1 - the shares the others hold now)

so the shares held never add up to more than the whole limit, even while
they change: a newcomer takes what is free at once and its fair share once
the others have renewed (and shrunk). Fair shares are max-min fair over
demand: a holder that showed it uses less than it was given (a job ending,
or one held back by its concurrency ceiling) keeps what it uses, the rest is
split equally (and a holder alone has all of it). A holder that stops renewing (a worker killed) loses its
lease when it expires, LEASE_SECONDS after its last renewal; times are the
database's, so hosts' clocks do not matter.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, models, transaction
from django.db.models import ExpressionWrapper
from django.db.models.functions import Now

from crystallise.ratelimit.models import RateLimitKey, RateLimitLease

RENEW_SECONDS = 0.5
LEASE_SECONDS = 4.0
# Namespace of the advisory locks (first int4 of pg_advisory_xact_lock(int4, int4)): "CRYS".
_LOCK_CLASS = 0x43525953


@dataclass(frozen=True)
class Grant:
    share: float
    holders: int
    limit_requests: float | None
    limit_tokens: float | None


def fair_shares(demands: dict[str, float | None]) -> dict[str, float]:
    """Max-min fair split of 1 among holders (a demand of None: as much as there is), the unused rest split equally."""
    out: dict[str, float] = {}
    remaining = 1.0
    ordered = sorted(demands, key=lambda h: math.inf if demands[h] is None else demands[h])
    for i, holder in enumerate(ordered):
        equal = remaining / (len(ordered) - i)
        wanted = demands[holder]
        out[holder] = equal if wanted is None else min(max(wanted, 0.0), equal)
        remaining -= out[holder]
    # What nobody showed a use for is handed out equally too (a holder alone always gets all of it).
    return {holder: share + remaining / len(out) for holder, share in out.items()}


def _expires() -> ExpressionWrapper:
    return ExpressionWrapper(Now() + timedelta(seconds=LEASE_SECONDS), output_field=models.DateTimeField())


def _lock(fingerprint: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_CLASS, int(fingerprint[:8], 16) - 2**31])


def renew(fingerprint: str, holder: str, *, demand: float | None, limit_requests: float | None = None,
          limit_tokens: float | None = None) -> Grant:
    """Renew (or take) `holder`'s lease on the key; report limits the provider advertised to this holder."""
    with transaction.atomic():
        _lock(fingerprint)
        leases = list(
            RateLimitLease.objects.filter(fingerprint=fingerprint).with_live()
            .values_list("holder", "share", "demand", "live")
        )
        others = {h: (share, wanted) for h, share, wanted, live in leases if live and h != holder}
        target = fair_shares({holder: demand, **{h: wanted for h, (_, wanted) in others.items()}})[holder]
        share = max(0.0, min(target, 1.0 - sum(share for share, _ in others.values())))
        key = RateLimitKey.objects.filter(fingerprint=fingerprint).first()
        if limit_requests or limit_tokens:
            _remember(fingerprint, key, limit_requests, limit_tokens)
        elif key is not None:
            limit_requests, limit_tokens = key.limit_requests, key.limit_tokens
        updated = RateLimitLease.objects.filter(fingerprint=fingerprint, holder=holder).update(
            share=share, demand=demand, expires_at=_expires())
        if not updated:
            RateLimitLease.objects.create(fingerprint=fingerprint, holder=holder, share=share, demand=demand,
                                          expires_at=_expires(), where=f"{socket.gethostname()}:{os.getpid()}"[:255])
        if any(not live for *_, live in leases):
            RateLimitLease.objects.filter(fingerprint=fingerprint, expires_at__lte=Now()).delete()
    return Grant(share=share, holders=len(others) + 1, limit_requests=limit_requests, limit_tokens=limit_tokens)


def _remember(fingerprint: str, key: RateLimitKey | None, limit_requests: float | None,
              limit_tokens: float | None) -> None:
    """Keep the limits the provider advertised for the key (one write, only when they changed)."""
    if key is None or (key.limit_requests, key.limit_tokens) != (limit_requests, limit_tokens):
        RateLimitKey.objects.update_or_create(
            fingerprint=fingerprint, defaults={"limit_requests": limit_requests, "limit_tokens": limit_tokens})


def known_limits(fingerprint: str) -> tuple[float | None, float | None]:
    """The key's limits per minute (requests, tokens) as last advertised to any run; (None, None) if unknown."""
    row = RateLimitKey.objects.filter(fingerprint=fingerprint).values_list("limit_requests", "limit_tokens").first()
    return row or (None, None)


def release(fingerprint: str, holder: str, *, limit_requests: float | None = None,
            limit_tokens: float | None = None) -> None:
    """Give the share back at once (the run ended), keeping the limits the provider advertised to it
    (a run shorter than one renewal has not reported them yet)."""
    RateLimitLease.objects.filter(fingerprint=fingerprint, holder=holder).delete()
    if limit_requests or limit_tokens:
        _remember(fingerprint, RateLimitKey.objects.filter(fingerprint=fingerprint).first(), limit_requests,
                  limit_tokens)

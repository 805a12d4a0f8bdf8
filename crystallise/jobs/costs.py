"""Spend selectors for operators: estimated and actual cost per day, model and API key.

Aggregated in the database (one grouped query per job table and grouping),
so the cost page costs the same for ten jobs or a million.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

ZERO = Decimal("0")


@dataclass
class SpendRow:
    label: str
    jobs: int = 0
    estimated_usd: Decimal = ZERO
    actual_usd: Decimal = ZERO
    key: object = field(default=None, repr=False)

    def add(self, jobs: int, estimated, actual) -> None:
        self.jobs += jobs
        self.estimated_usd += estimated or ZERO
        self.actual_usd += actual or ZERO


@dataclass
class SpendReport:
    start: date
    end: date
    by_day: list[SpendRow]
    by_model: list[SpendRow]
    by_lane: list[SpendRow]
    by_key: list[SpendRow]

    @property
    def total(self) -> SpendRow:
        row = SpendRow("total")
        for day in self.by_day:
            row.add(day.jobs, day.estimated_usd, day.actual_usd)
        return row


def lane_label(mode: str, service_tier: str) -> str:
    """The lane a job's calls took, which sets their price (crystallise.config.TIER_PRICING_PER_1M)."""
    if mode == "batch":
        return "batch"
    return "online (flex)" if service_tier == "flex" else "online"


def job_models() -> list[type]:
    from crystallise.jobs.models import BaseJob

    return BaseJob.__subclasses__()


def spend_report(*, start: date, end: date) -> SpendReport:
    """Spend of the jobs created from `start` to `end` (inclusive, UTC days), every day of the range listed."""
    from crystallise.models import ApiKey

    tz = timezone.get_current_timezone()
    lower = timezone.make_aware(datetime.combine(start, time.min), tz)
    upper = timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min), tz)
    sums = {"jobs": Count("id"), "estimated": Sum("estimated_cost_usd"), "actual": Sum("cost_usd")}

    days = {start + timedelta(days=i): SpendRow(str(start + timedelta(days=i))) for i in range((end - start).days + 1)}
    models: dict[str, SpendRow] = {}
    lanes: dict[str, SpendRow] = {}
    keys: dict[object, SpendRow] = {}
    for job_model in job_models():
        jobs = job_model.objects.filter(created_at__gte=lower, created_at__lt=upper).order_by()
        for row in jobs.annotate(day=TruncDate("created_at")).values("day").annotate(**sums):
            day = row["day"]
            days.setdefault(day, SpendRow(str(day))).add(row["jobs"], row["estimated"], row["actual"])
        for row in jobs.values("model").annotate(**sums):
            models.setdefault(row["model"], SpendRow(row["model"])).add(row["jobs"], row["estimated"], row["actual"])
        for row in jobs.values("mode", "service_tier").annotate(**sums):
            label = lane_label(row["mode"], row["service_tier"])
            lanes.setdefault(label, SpendRow(label)).add(row["jobs"], row["estimated"], row["actual"])
        for row in jobs.values("api_key_id", "api_key_label").annotate(**sums):
            # Admin keys group by id (a renamed key stays one row); env keys and dev mode by label.
            ident = row["api_key_id"] or f"label:{row['api_key_label']}"
            entry = keys.setdefault(ident, SpendRow(row["api_key_label"] or "(none)", key=row["api_key_id"]))
            entry.add(row["jobs"], row["estimated"], row["actual"])
    live = {k.pk: k.label for k in ApiKey.objects.filter(pk__in=[r.key for r in keys.values() if r.key])}
    for row in keys.values():
        row.label = live.get(row.key, row.label)
    by_spend = lambda rows: sorted(rows, key=lambda r: (-r.actual_usd, -r.estimated_usd, r.label))  # noqa: E731
    return SpendReport(
        start=start, end=end,
        by_day=[days[d] for d in sorted(days)],
        by_model=by_spend(models.values()),
        by_lane=by_spend(lanes.values()),
        by_key=by_spend(keys.values()),
    )

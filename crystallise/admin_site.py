"""The operators' admin site: Django's admin plus the cost page at /admin/costs/."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from decimal import Decimal

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from crystallise.jobs.costs import SpendReport, SpendRow, spend_report

DEFAULT_DAYS = 30
MAX_DAYS = 366
# Dates outside this range cannot hold jobs, and the period arithmetic around them would overflow.
EARLIEST, LATEST = date(1970, 1, 1), date(9000, 12, 31)
CHART_WIDTH = 900
CHART_HEIGHT = 220
CHART_LEFT = 70
CHART_BOTTOM = 28


class CrystalliseAdminSite(admin.AdminSite):
    site_header = "Crystallise operations"
    site_title = "Crystallise admin"
    index_title = "Jobs, API keys and costs"
    index_template = "admin/crystallise/index.html"

    def get_urls(self):
        return [path("costs/", self.admin_view(self.costs_view), name="costs"), *super().get_urls()]

    def costs_view(self, request: HttpRequest) -> HttpResponse:
        start, end = period(request)
        report = spend_report(start=start, end=end)
        if request.GET.get("format") == "csv":
            return costs_csv(report)
        context = {
            **self.each_context(request),
            "title": "Costs",
            "report": report,
            "total": report.total,
            "chart": bar_chart(report.by_day),
            "days_with_jobs": [day for day in report.by_day if day.jobs],
            "start": start,
            "end": end,
            "csv_url": f"{reverse('admin:costs')}?start={start}&end={end}&format=csv",
        }
        return TemplateResponse(request, "admin/crystallise/costs.html", context)


def period(request: HttpRequest) -> tuple[date, date]:
    """The `start`/`end` GET dates (inclusive); the last 30 days when absent or invalid."""
    today = timezone.localdate()
    end = _date(request, "end") or today
    start = _date(request, "start") or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        messages.warning(request, "The start date was after the end date; they were swapped.")
        start, end = end, start
    if (end - start).days >= MAX_DAYS:
        messages.warning(request, f"At most {MAX_DAYS} days at a time; showing the last {MAX_DAYS} days up to {end}.")
        start = end - timedelta(days=MAX_DAYS - 1)
    return start, end


def _date(request: HttpRequest, name: str) -> date | None:
    value = (request.GET.get(name) or "").strip()
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        messages.warning(request, f"Ignored {name}={value!r}: use YYYY-MM-DD.")
        return None
    if not EARLIEST <= day <= LATEST:
        messages.warning(request, f"Ignored {name}={value}: use a date from {EARLIEST} to {LATEST}.")
        return None
    return day


def costs_csv(report: SpendReport) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="crystallise-costs-{report.start}-{report.end}.csv"'
    writer = csv.writer(response)
    writer.writerow(["group", "value", "jobs", "estimated_cost_usd", "cost_usd"])
    for group, rows in (("day", report.by_day), ("model", report.by_model), ("lane", report.by_lane),
                        ("api_key", report.by_key)):
        for row in rows:
            writer.writerow([group, row.label, row.jobs, f"{row.estimated_usd:.6f}", f"{row.actual_usd:.6f}"])
    return response


def bar_chart(days: list[SpendRow]) -> dict:
    """Geometry of a grouped bar chart (estimated beside actual, per day) for a server-rendered SVG."""
    top = max([max(d.estimated_usd, d.actual_usd) for d in days] + [Decimal("0")])
    scale = top if top > 0 else Decimal("1")
    plot_w = CHART_WIDTH - CHART_LEFT - 10
    plot_h = CHART_HEIGHT - CHART_BOTTOM - 10
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.4, 1)
    label_every = max(1, round(len(days) / 10))
    bars = []
    for i, day in enumerate(days):
        x = CHART_LEFT + i * slot
        est_h = float(day.estimated_usd / scale) * plot_h
        act_h = float(day.actual_usd / scale) * plot_h
        bars.append({
            "day": day.label,
            "x_est": round(x + slot * 0.1, 2), "x_act": round(x + slot * 0.1 + bar, 2), "w": round(bar, 2),
            "y_est": round(10 + plot_h - est_h, 2), "h_est": round(est_h, 2),
            "y_act": round(10 + plot_h - act_h, 2), "h_act": round(act_h, 2),
            "estimated": day.estimated_usd, "actual": day.actual_usd,
            "label": day.label[5:] if i % label_every == 0 else "", "x_label": round(x + slot / 2, 2),
        })
    ticks = [{"y": round(10 + plot_h - f * plot_h, 2), "value": top * Decimal(str(f))} for f in (0, 0.5, 1)]
    return {
        "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": CHART_LEFT, "right": CHART_WIDTH - 10,
        "baseline": 10 + plot_h, "center": CHART_LEFT + plot_w // 2, "middle": 10 + plot_h // 2, "label_y": CHART_HEIGHT - 8, "bars": bars, "ticks": ticks, "empty": top == 0,
    }

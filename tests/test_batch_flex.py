"""The flex tier for online jobs: half price, 429 "resource unavailable" retried then sent in the default
tier, cost at the tier each answer says it used; and the per-lane costs operators see."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from django.utils import timezone

from crystallise.jobs.costs import spend_report
from crystallise.tokens import cost_usd
from screening.models import ScreeningJob, ScreeningResult
from tests.test_batch import CRITERIA, PAPERS, URL

pytestmark = pytest.mark.django_db(transaction=True)


def flex_job(api, **body):
    response = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "service_tier": "flex", **body}, format="json")
    assert response.status_code == 202, response.json()
    return response.json()


def test_flex_job_is_billed_at_the_flex_price(api, fake_openai, run_queue):
    online = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json").json()
    api.delete(f"{URL}/{online['id']}")
    job = flex_job(api)
    assert job["service_tier"] == "flex"
    assert abs(Decimal(str(job["estimated_cost_usd"])) * 2 - Decimal(str(online["estimated_cost_usd"]))) <= Decimal(
        "0.00000002")
    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert body["status"] == "completed" and body["progress"]["screened"] == 4
    flex_calls = [r for r in fake_openai.requests if r["body"] and r["body"].get("service_tier") == "flex"]
    assert len(flex_calls) == 4
    row = ScreeningJob.objects.get(pk=job["id"])
    assert abs(row.cost_usd - cost_usd(row.model, row.usage, "flex")) <= Decimal("0.00000004") and row.cost_usd > 0


def test_flex_without_capacity_backs_off_then_uses_the_default_tier(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_FLEX_MAX_TRIES = 2
    settings.CRYSTALLISE_LLM_CONCURRENCY = 1
    fake_openai.config.flex_unavailable = 2  # the first paper's two flex tries are refused
    job = flex_job(api)
    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert body["status"] == "completed" and body["progress"]["errored"] == 0
    tiers = [r["body"].get("service_tier") for r in fake_openai.requests]
    assert tiers == ["flex", "flex", None, "flex", "flex", "flex"]
    assert [r["status"] for r in fake_openai.requests[:3]] == [429, 429, 200]
    # The paper answered in the default tier costs the default price; the others the flex price.
    rows = ScreeningResult.objects.filter(job_id=job["id"]).order_by("position")
    from crystallise.tokens import Usage
    expected = sum((cost_usd("gpt-5-nano", Usage(r.input_tokens, r.cached_input_tokens, r.output_tokens),
                             "default" if r.position == 0 else "flex") for r in rows), Decimal("0"))
    assert abs(ScreeningJob.objects.get(pk=job["id"]).cost_usd - expected) <= Decimal("0.00000004")


def test_costs_page_and_job_list_show_the_lane(api, staff, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_POLL_SECONDS = 0
    flex_job(api)
    api.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "mode": "batch"}, format="json")
    run_queue()
    today = timezone.now().date()
    report = spend_report(start=today, end=today)
    assert {row.label: row.jobs for row in report.by_lane} == {"online (flex)": 1, "batch": 1}
    assert isinstance(report.start, date)
    html = staff.get("/admin/costs/").content.decode()
    assert 'id="costs-by-lane"' in html and "online (flex)" in html
    rows = list(csv.reader(io.StringIO(staff.get("/admin/costs/", {"format": "csv"}).content.decode())))
    assert {r[1] for r in rows if r[0] == "lane"} == {"online (flex)", "batch"}
    listing = staff.get("/admin/screening/screeningjob/", {"mode": "batch"}).content.decode()
    assert listing.count(">batch<") == 1 and "online (flex)" not in listing


def test_the_job_page_shows_the_lane_and_the_batches(api, staff, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_POLL_SECONDS = 0
    job = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "mode": "batch"}, format="json").json()
    run_queue()
    batch_id = ScreeningJob.objects.get(pk=job["id"]).batches[0]["id"]
    html = staff.get(f"/admin/screening/screeningjob/{job['id']}/change/").content.decode()
    assert "Provider batches" in html and batch_id in html and "validating" in html and "0/0/4" in html

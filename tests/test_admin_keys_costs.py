"""Operators' admin for API keys and spend: key pages and secrets, budgets and revocation, `create_api_key`, the cost
page."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from crystallise.models import ApiKey
from crystallise.ratelimit.models import RateLimitKey
from screening.models import ScreeningJob
from tests.admin_support import COSTS, KEYS, REQUEST_OPENAI_KEY, SCREENING, action, page_messages, submit
from tests.factories import ApiKeyFactory, IndexJobFactory, ScreeningJobFactory

pytestmark = pytest.mark.django_db(transaction=True)


# --- API keys ----------------------------------------------------------------


def test_key_secret_is_shown_once_then_only_its_prefix(staff):
    response = staff.post(f"{KEYS}add/", {"name": "partner", "monthly_budget_usd": "25.00"})
    html = response.content.decode()
    secret = re.search(r'id="api-key-secret"[^>]*value="([^"]+)"', html).group(1)
    key = ApiKey.objects.get(name="partner")
    assert secret.startswith("cry_") and key.prefix == secret[:12]
    for url in (KEYS, f"{KEYS}{key.pk}/change/", SCREENING, COSTS):
        page = staff.get(url).content.decode()
        assert secret not in page and secret[12:] not in page


def test_key_list_and_detail_show_requests_spend_and_budget(staff):
    key = ApiKeyFactory(name="lab", monthly_budget_usd=Decimal("20.00"), request_count=7,
                        last_used_at=timezone.now())
    ScreeningJobFactory(api_key=key, cost_usd=Decimal("1.25"))
    IndexJobFactory(api_key=key, cost_usd=Decimal("0.50"))
    IndexJobFactory(api_key=key, cost_usd=Decimal("3"), created_at=timezone.now() - timedelta(days=62))
    ScreeningJobFactory(cost_usd=Decimal("9"))  # another caller's spend
    listing = staff.get(KEYS).content.decode()
    assert "$4.7500" in listing and "$1.7500 of $20.00" in listing and ">7<" in listing
    detail = staff.get(f"{KEYS}{key.pk}/change/").content.decode()
    assert "$4.7500" in detail and 'name="monthly_budget_usd"' in detail and 'value="20.00"' in detail


def test_budget_name_and_revocation_are_editable(staff):
    key = ApiKeyFactory(name="lab")
    response = staff.post(f"{KEYS}{key.pk}/change/", {"name": "lab-2", "monthly_budget_usd": "12.50", "is_active": "on"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.monthly_budget_usd) == ("lab-2", Decimal("12.50"))
    action(staff, KEYS, "revoke_keys", key.pk)
    key.refresh_from_db()
    assert not key.is_active and key.revoked_at
    action(staff, KEYS, "reactivate_keys", key.pk)
    key.refresh_from_db()
    assert key.is_active and key.revoked_at is None
    # The change form cannot flip it behind the actions' back (revoked_at would not follow).
    staff.post(f"{KEYS}{key.pk}/change/", {"name": "lab-2", "monthly_budget_usd": "12.50"})
    key.refresh_from_db()
    assert key.is_active and key.revoked_at is None


def test_secrets_never_appear_in_admin_html(staff, fake_openai, run_queue):
    from rest_framework.test import APIClient

    response = staff.post(f"{KEYS}add/", {"name": "partner"})
    secret = re.search(r'id="api-key-secret"[^>]*value="([^"]+)"', response.content.decode()).group(1)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=secret)
    job_id = submit(client, HTTP_X_OPENAI_API_KEY=REQUEST_OPENAI_KEY)
    pages = [SCREENING, f"{SCREENING}{job_id}/change/", f"{SCREENING}{job_id}/results/", KEYS, COSTS,
             f"{COSTS}?format=csv", "/admin/"]
    key = ApiKey.objects.get()
    pages.append(f"{KEYS}{key.pk}/change/")

    def check():
        for url in pages:
            body = staff.get(url).content.decode()
            for value in (secret, REQUEST_OPENAI_KEY, REQUEST_OPENAI_KEY[3:], fake_openai_key()):
                assert value not in body, (url, value)

    check()  # while the encrypted request key exists
    run_queue()
    assert ScreeningJob.objects.get(pk=job_id).status == "completed"
    check()
    assert "partner (cry_" in staff.get(SCREENING).content.decode()


def fake_openai_key() -> str:
    from tests.conftest import SERVER_OPENAI_KEY

    return SERVER_OPENAI_KEY


# --- costs -------------------------------------------------------------------


def test_cost_page_sums_per_day_model_and_key(staff):
    key = ApiKeyFactory(name="lab")
    today = timezone.now()
    ScreeningJobFactory(api_key=key, api_key_label=key.label, cost_usd=Decimal("1.5"), estimated_cost_usd=Decimal("2"))
    IndexJobFactory(api_key=key, api_key_label=key.label, model="gpt-4o-mini", cost_usd=Decimal("0.25"),
              estimated_cost_usd=Decimal("0.5"))
    ScreeningJobFactory(api_key_label="env key #1", cost_usd=Decimal("1"), estimated_cost_usd=Decimal("1"),
                  created_at=today - timedelta(days=2))
    ScreeningJobFactory(cost_usd=Decimal("100"), created_at=today - timedelta(days=45))  # outside the default period
    html = staff.get(COSTS).content.decode()
    assert "<svg" in html and 'class="act"' in html and "Download CSV" in html
    assert "<strong>3</strong> jobs" in html and "$2.7500" in html and "$3.5000" in html
    assert "lab (cry_" in html and "env key #1" in html and "gpt-4o-mini" in html
    assert "http://" not in html.split("<svg", 1)[1].split("</svg>")[0].replace("http://www.w3.org/2000/svg", "")

    rows = list(csv.reader(io.StringIO(staff.get(COSTS, {"format": "csv"}).content.decode())))
    assert rows[0] == ["group", "value", "jobs", "estimated_cost_usd", "cost_usd"]
    table = {(r[0], r[1]): r[2:] for r in rows[1:]}
    assert table[("day", str(timezone.localdate()))] == ["2", "2.500000", "1.750000"]
    assert table[("model", "gpt-5-nano")] == ["2", "3.000000", "2.500000"]
    assert table[("api_key", key.label)] == ["2", "2.500000", "1.750000"]
    assert table[("api_key", "env key #1")] == ["1", "1.000000", "1.000000"]
    assert len([r for r in rows if r[0] == "day"]) == 30

    old = (timezone.localdate() - timedelta(days=45)).isoformat()
    response = staff.get(COSTS, {"start": old, "end": old, "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    assert f'filename="crystallise-costs-{old}-{old}.csv"' in response["Content-Disposition"]
    assert "100.000000" in response.content.decode()


def test_cost_page_handles_bad_and_reversed_dates(staff):
    response = staff.get(COSTS, {"start": "yesterday", "end": "2026-01-10"})
    assert response.status_code == 200 and any("Ignored start" in m for m in page_messages(response))
    response = staff.get(COSTS, {"start": "2026-02-10", "end": "2026-02-01"})
    assert response.context["start"].isoformat() == "2026-02-01" and "swapped" in page_messages(response)[0]
    response = staff.get(COSTS, {"start": "2020-01-01", "end": "2026-01-01"})
    assert len(response.context["report"].by_day) == 366
    # The calendar's ends: a warning, not a server error.
    for extreme in ({"end": "9999-12-31"}, {"end": "0001-01-05"}, {"start": "0001-01-01", "end": "2026-01-01"}):
        for fmt in ({}, {"format": "csv"}):
            response = staff.get(COSTS, {**extreme, **fmt})
            assert response.status_code == 200, extreme
        assert any("use a date from" in m for m in page_messages(staff.get(COSTS, extreme)))


def test_admin_index_links_the_cost_page(staff):
    assert 'href="/admin/costs/"' in staff.get("/admin/").content.decode()


@pytest.mark.parametrize(("args", "message"), [
    (["k", "--monthly-budget-usd", "abc"], "must be an amount"),
    (["k", "--monthly-budget-usd", "nan"], "monthly_budget_usd"),
    (["k", "--monthly-budget-usd", "inf"], "monthly_budget_usd"),
    (["k", "--monthly-budget-usd", "1e20"], "monthly_budget_usd"),
    (["k", "--monthly-budget-usd", "-1"], "monthly_budget_usd"),
    (["k", "--monthly-budget-usd", "0.001"], "monthly_budget_usd"),
    (["  "], "name"),
    (["n" * 300], "name"),
])
def test_create_api_key_refuses_what_the_admin_would_refuse(args, message, capsys):
    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args)
    assert not ApiKey.objects.exists() and capsys.readouterr().out == ""


def test_create_api_key_with_a_budget(capsys):
    call_command("create_api_key", " team-a ", "--monthly-budget-usd", "12.50")
    key = ApiKey.objects.get()
    assert key.name == "team-a" and key.monthly_budget_usd == Decimal("12.50")
    assert capsys.readouterr().out.strip().startswith("cry_")


def test_admin_key_form_refuses_a_negative_budget(staff):
    response = staff.post("/admin/crystallise/apikey/add/", {"name": "neg", "monthly_budget_usd": "-1", "is_active": "on"})
    assert response.status_code == 200 and not ApiKey.objects.filter(name="neg").exists()
    assert "greater than or equal to 0" in response.content.decode()


# --- provider keys' rate limits ----------------------------------------------------


def test_operators_see_each_provider_keys_limits_and_the_shares_held_read_only(staff, api, fake_openai, run_queue):
    from crystallise.keyvault import key_fingerprint
    from crystallise.ratelimit import lease
    from tests.conftest import SERVER_OPENAI_KEY

    fake_openai.config.update({"rpm": 6000, "tpm": 2_400_000})
    submit(api)
    run_queue()  # the job learns the key's limits and keeps them
    fingerprint = key_fingerprint(SERVER_OPENAI_KEY)
    lease.renew(fingerprint, "a" * 32, demand=None)  # a job running on the key now
    keys = "/admin/crystallise/ratelimitkey/"
    page = staff.get(keys).content.decode()
    assert fingerprint[:12] in page and "6000" in page and "2400000" in page
    assert "100%" in page  # the running job holds the whole limit
    leases = staff.get("/admin/crystallise/ratelimitlease/").content.decode()
    assert "aaaaaaaa" in leases and "100%" in leases
    for body in (page, leases):
        assert SERVER_OPENAI_KEY not in body  # its fingerprint, never the key
    # Written by jobs only: no add, change or delete.
    assert staff.get(f"{keys}add/").status_code == 403
    row = RateLimitKey.objects.get(pk=fingerprint)
    assert staff.post(f"{keys}{row.pk}/change/", {"limit_requests": "1"}).status_code == 403
    assert staff.post(f"{keys}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert RateLimitKey.objects.get(pk=fingerprint).limit_requests == 6000

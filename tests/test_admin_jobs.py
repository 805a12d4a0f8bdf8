"""Operators' admin for jobs: permissions, job lists and details, result pages, and the cancel and resubmit actions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from crystallise.jobs.models import JobSecret
from crystallise.models import ApiKey
from indexer.models import IndexJob
from screening.models import ScreeningJob
from tests.admin_support import (
    COSTS,
    CRITERIA,
    INDEXING,
    KEYS,
    PAPERS,
    RECORDS,
    REQUEST_OPENAI_KEY,
    SCREENING,
    action,
    page_messages,
    submit,
)
from tests.factories import ApiKeyFactory, IndexJobFactory, PaperFactory, ScreeningJobFactory, ScreeningResultFactory, paper

pytestmark = pytest.mark.django_db(transaction=True)


# --- permissions -------------------------------------------------------------

ADMIN_PAGES = ["/admin/", SCREENING, INDEXING, KEYS, COSTS, f"{COSTS}?format=csv"]


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_anonymous_is_sent_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_non_staff_user_has_no_access(client, url):
    user = get_user_model().objects.create_user("someone", password="pw-someone-123")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_staff_superuser_gets_every_page(staff, url):
    assert staff.get(url).status_code == 200


def test_view_only_staff_sees_jobs_but_cannot_cancel(client):
    user = get_user_model().objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_screeningjob"))
    client.force_login(user)
    job = ScreeningJobFactory(status="running")
    response = client.get(SCREENING)
    assert response.status_code == 200 and str(job.pk)[:8] in response.content.decode()
    assert "cancel_jobs" not in response.content.decode()
    action(client, SCREENING, "cancel_jobs", job.pk)
    assert ScreeningJob.objects.get(pk=job.pk).status == "running"
    assert client.get(INDEXING).status_code == 403


def test_jobs_cannot_be_added_changed_or_deleted_by_hand(staff):
    job = ScreeningJobFactory()
    assert staff.get(f"{SCREENING}add/").status_code == 403
    assert staff.get(f"{SCREENING}{job.pk}/delete/").status_code == 403
    detail = staff.get(f"{SCREENING}{job.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    staff.post(f"{SCREENING}{job.pk}/change/", {"status": "completed", "model": "gpt-4o"})
    assert ScreeningJob.objects.get(pk=job.pk).model == "gpt-5-nano"


# --- lists and details -------------------------------------------------------


def test_job_list_detail_and_results_render_for_a_real_job(staff, api, fake_openai, run_queue):
    job_id = submit(api)
    run_queue()
    job = ScreeningJob.objects.get(pk=job_id)
    assert job.status == "completed" and job.cost_usd > 0

    listing = staff.get(SCREENING).content.decode()
    assert job_id[:8] in listing and "2/2" in listing and "gpt-5-nano" in listing and "proj-a" in listing
    assert f"${job.cost_usd:.6f}" in listing and f"${job.estimated_cost_usd:.6f}" in listing

    detail = staff.get(f"{SCREENING}{job_id}/change/").content.decode()
    for text in ("I1", "randomized trial", "E1", "pediatric children", "Do triptans relieve migraine?",
                 "server", "2/2 screened", "all", f"{SCREENING}{job_id}/results/"):
        assert text in detail, text
    assert "cluster_assignments" not in detail

    results = staff.get(f"{SCREENING}{job_id}/results/").content.decode()
    assert "Sumatriptan for migraine treatment" in results and "include" in results and "Page 1 of 1" in results


def test_results_are_paged_100_at_a_time(staff):
    from screening.models import Paper, ScreeningResult

    job = ScreeningJobFactory(total=250, screened=250, status="completed")
    papers = Paper.objects.bulk_create(PaperFactory.build(job=job, position=i, title=f"Title {i}") for i in range(250))
    ScreeningResult.objects.bulk_create(ScreeningResultFactory.build(paper=p) for p in papers)
    url = f"{SCREENING}{job.pk}/results/"
    first = staff.get(url).content.decode()
    assert "Page 1 of 3" in first and "Title 99<" in first and "Title 100<" not in first
    last = staff.get(url, {"page": 3}).content.decode()
    assert "Title 249<" in last and "Title 199<" not in last
    assert staff.get(f"{SCREENING}00000000-0000-4000-8000-000000000000/results/").status_code == 404


def test_index_job_list_detail_and_results(staff, api, fake_openai, run_queue):
    response = api.post("/v1/indexer/jobs", {"records": RECORDS, "model": "gpt-5-nano"}, format="json")
    assert response.status_code == 202, response.json()
    job_id = response.json()["id"]
    run_queue()
    listing = staff.get(INDEXING).content.decode()
    assert job_id[:8] in listing and "1/1" in listing
    detail = staff.get(f"{INDEXING}{job_id}/change/").content.decode()
    assert "1/1 processed" in detail and "population" in detail
    results = staff.get(f"{INDEXING}{job_id}/results/").content.decode()
    assert "r1" in results and "Sumatriptan trial" in results


def test_filters_search_and_newest_first(staff):
    old = ScreeningJobFactory(created_at=timezone.now() - timedelta(days=3), project_id="old-proj", model="gpt-4o-mini")
    new = ScreeningJobFactory(status="failed", error_category="auth", error_message="OpenAI rejected the key.")
    listing = staff.get(SCREENING).content.decode()
    assert listing.index(str(new.pk)[:8]) < listing.index(str(old.pk)[:8])
    only_failed = staff.get(SCREENING, {"status__exact": "failed"}).content.decode()
    assert str(new.pk)[:8] in only_failed and str(old.pk)[:8] not in only_failed
    by_model = staff.get(SCREENING, {"model": "gpt-4o-mini"}).content.decode()
    assert str(old.pk)[:8] in by_model and str(new.pk)[:8] not in by_model
    by_error = staff.get(SCREENING, {"error_category": "auth"}).content.decode()
    assert str(new.pk)[:8] in by_error and str(old.pk)[:8] not in by_error
    assert str(old.pk)[:8] in staff.get(SCREENING, {"q": "old-proj"}).content.decode()
    found = staff.get(SCREENING, {"q": str(new.pk)}).content.decode()
    assert str(new.pk)[:8] in found and str(old.pk)[:8] not in found
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    recent = staff.get(SCREENING, {"created_at__gte": str(midnight)}).content.decode()
    assert str(new.pk)[:8] in recent and str(old.pk)[:8] not in recent
    detail = staff.get(f"{SCREENING}{new.pk}/change/").content.decode()
    assert "OpenAI rejected the key." in detail


def test_lists_do_not_query_per_row(staff, django_assert_max_num_queries):
    ScreeningJobFactory()
    with django_assert_max_num_queries(10) as few:
        staff.get(SCREENING)
    keys = [ApiKeyFactory() for _ in range(5)]
    ScreeningJob.objects.all().delete()
    for i in range(30):
        key = keys[i % 5]
        ScreeningJobFactory(api_key=key, api_key_label=key.label, cluster_assignments=list(range(2000)))
        IndexJobFactory(api_key=key, api_key_label=key.label)
    ApiKey.objects.filter(pk=keys[0].pk).update(is_active=False)
    for url in (SCREENING, INDEXING):
        with django_assert_max_num_queries(10) as many:
            response = staff.get(url)
        assert response.content.decode().count("(revoked)") == 6
        if url == SCREENING:
            assert len(many.captured_queries) == len(few.captured_queries)  # 30 rows cost what none cost
    for _ in range(25):
        ApiKeyFactory()
    with django_assert_max_num_queries(8):
        assert staff.get(KEYS).status_code == 200
    with django_assert_max_num_queries(14):
        assert staff.get(COSTS).status_code == 200


# --- actions -----------------------------------------------------------------


def test_cancel_action_cancels_active_jobs_and_drops_the_request_key(staff, api, fake_openai):
    job_id = submit(api, HTTP_X_OPENAI_API_KEY=REQUEST_OPENAI_KEY)
    done = ScreeningJobFactory(status="completed")
    assert JobSecret.objects.filter(job_id=job_id).exists()
    response = action(staff, SCREENING, "cancel_jobs", job_id, done.pk)
    assert "Cancelled 1 job. 1 already finished, left as they were." in page_messages(response)
    assert ScreeningJob.objects.get(pk=job_id).status == "cancelled"
    assert ScreeningJob.objects.get(pk=done.pk).status == "completed"
    assert not JobSecret.objects.filter(job_id=job_id).exists()
    assert api.get(f"/v1/screening/jobs/{job_id}").json()["status"] == "cancelled"


def test_every_cancel_path_sends_the_completion_callback(staff, api, fake_openai, settings):
    """The admin action and DELETE use the same cancel service: a cancelled job's callback is queued either way."""
    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True
    ids = []
    for project in ("cb-1", "cb-2"):
        response = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS, "project_id": project,
                                                   "callback_url": "http://127.0.0.1:9/hook"}, format="json")
        ids.append(response.json()["id"])
    action(staff, SCREENING, "cancel_jobs", ids[0])
    assert api.delete(f"/v1/screening/jobs/{ids[1]}").json()["status"] == "cancelled"
    assert set(ScreeningJob.objects.filter(pk__in=ids).values_list("status", "callback_status")) == {
        ("cancelled", "pending")}


@pytest.mark.parametrize(("fields", "message"), [
    ({"threshold": 2.0}, "Invalid input: threshold"),
    ({"total": 0}, "Invalid input: papers"),
])
def test_resubmit_validates_stored_inputs_like_the_api(staff, fields, message):
    """A job stored before a rule existed (or by an older command) is refused with the rule's message."""
    job = ScreeningJobFactory(**{"status": "completed", "total": 1, **fields})
    if job.total:
        PaperFactory(job=job, position=0)
    response = action(staff, SCREENING, "resubmit_jobs", job.pk)
    assert any(message in m for m in page_messages(response)), page_messages(response)
    assert ScreeningJob.objects.count() == 1


def test_resubmit_creates_the_same_job_for_the_same_client(staff, api, fake_openai, run_queue):
    job_id = submit(api)
    run_queue()
    response = action(staff, SCREENING, "resubmit_jobs", job_id)
    [message] = page_messages(response)
    assert message.startswith(f"Job {job_id} resubmitted as")
    original = ScreeningJob.objects.get(pk=job_id)
    new = ScreeningJob.objects.exclude(pk=job_id).get()
    assert new.owner == original.owner and new.api_key_label == original.api_key_label
    assert (new.criteria, new.threshold, new.clusters_config, new.project_id, new.model) == (
        original.criteria, original.threshold, original.clusters_config, original.project_id, original.model)
    assert new.status == "pending" and new.idempotency_key is None
    assert list(new.papers.order_by("position").values_list("paper_id", "keywords", "year", "doi")) == [
        ("p1", ["migraine"], 2004, "10.1/p1"), ("p2", [], None, None)]
    run_queue()
    body = api.get(f"/v1/screening/jobs/{new.pk}").json()
    assert body["status"] == "completed" and body["progress"]["screened"] == 2


def test_resubmit_keeps_the_admin_key_and_its_budget(staff, fake_openai, run_queue):
    key, secret = ApiKey.objects.create_key(name="lab", monthly_budget_usd=Decimal("50"))
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_X_API_KEY=secret)
    job_id = submit(client)
    run_queue()
    action(staff, SCREENING, "resubmit_jobs", job_id)
    new = ScreeningJob.objects.exclude(pk=job_id).get()
    assert new.api_key_id == key.pk
    assert [j["id"] for j in client.get("/v1/screening/jobs").json()["results"]][0] == str(new.pk)
    ApiKey.objects.filter(pk=key.pk).update(monthly_budget_usd=Decimal("0"))
    run_queue()
    response = action(staff, SCREENING, "resubmit_jobs", new.pk)
    assert "monthly budget" in page_messages(response)[0]
    # Over the API the refusal is a 400 budget with the estimate, for a job and for consolidate.
    for path, body in (("/v1/screening/jobs", {"criteria": {"inclusion": ["adults"]}, "papers": [paper("m1", "Triptans for migraine")]}),
                       ("/v1/criteria/consolidate", {"criteria": [{"text": "adults", "kind": "inclusion"}]})):
        refused = client.post(path, body, format="json")
        assert refused.status_code == 400 and refused.json()["error_category"] == "budget"
        assert refused.json()["estimated_cost_usd"] > 0 and "monthly budget" in refused.json()["detail"]
    key.revoke()
    response = action(staff, SCREENING, "resubmit_jobs", new.pk)
    assert "has been revoked" in page_messages(response)[0]
    assert ScreeningJob.objects.count() == 2


def test_resubmit_is_refused_for_jobs_that_ran_on_a_per_request_key(staff, api, fake_openai, run_queue):
    job_id = submit(api, HTTP_X_OPENAI_API_KEY=REQUEST_OPENAI_KEY)
    run_queue()
    response = action(staff, SCREENING, "resubmit_jobs", job_id)
    [message] = page_messages(response)
    assert "not resubmitted" in message and "per-request OpenAI key" in message
    assert ScreeningJob.objects.count() == 1


def test_resubmit_of_an_active_project_job_is_a_clear_conflict(staff, api, fake_openai):
    job_id = submit(api)
    response = action(staff, SCREENING, "resubmit_jobs", job_id)
    assert "already has an active screening job" in page_messages(response)[0]


def test_resubmit_index_job(staff, api, fake_openai, run_queue):
    job_id = api.post("/v1/indexer/jobs", {"records": RECORDS, "model": "gpt-5-nano"}, format="json").json()["id"]
    run_queue()
    response = action(staff, INDEXING, "resubmit_jobs", job_id)
    assert page_messages(response)[0].startswith(f"Job {job_id} resubmitted as")
    new = IndexJob.objects.exclude(pk=job_id).get()
    assert new.fields == IndexJob.objects.get(pk=job_id).fields
    assert list(new.records.values_list("record_id", "abstract")) == [("r1", RECORDS[0]["abstract"])]
    run_queue()
    assert IndexJob.objects.get(pk=new.pk).status == "completed"

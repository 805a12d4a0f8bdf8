"""The screening report (PRISMA 2020 counts and methods) and the admin's review and validation summary."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from screening import prompts
from tests.trust_support import CRITERIA, URL, post_reviews, review, screened

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mock_backend(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"


@pytest.fixture
def reviewed_job(api, run_queue, mock_backend):
    # Model: p1, x.5 include; p2, p3, p4 exclude.
    job = screened(api, run_queue)
    post_reviews(api, job["id"], [review("p1", "exclude"), review("p2", "include"), review("p3", "exclude"),
                                  review("p4", "include", "alice"), review("p4", "exclude", "bob")])
    return job


def test_prisma_counts_add_up_and_count_overturned_decisions(api, reviewed_job):
    response = api.get(f"{URL}/{reviewed_job['id']}/report")
    assert response.status_code == 200, response.json()
    prisma = response.json()["prisma"]
    assert prisma["records"] == prisma["screened"] == 5 and prisma["not_screened"] == 0
    assert prisma["excluded_by_automation"] == 0  # p2, p3 reviewed; p4 in conflict
    assert prisma["excluded_by_humans"] == 2 and prisma["included"] == 1
    assert prisma["overturned_include_to_exclude"] == 1 and prisma["overturned_exclude_to_include"] == 1
    assert prisma["awaiting_review"] == 2 and prisma["conflicts"] == 1  # x.5 (model include) and p4
    assert (prisma["excluded_by_automation"] + prisma["excluded_by_humans"] + prisma["included"]
            + prisma["awaiting_review"]) == prisma["screened"]


def test_methods_name_the_run_the_prompt_hash_and_say_recall_is_not_certified(api, reviewed_job):
    body = api.get(f"{URL}/{reviewed_job['id']}/report").json()
    methods = body["methods"]
    assert methods["prompt_sha256"] == hashlib.sha256(prompts.system_prompt(CRITERIA).encode()).hexdigest()
    assert methods["prompt_sha256_source"] == "recorded when the job ran"
    assert methods["lane"] == "online" and methods["llm_backend"] == "mock"
    assert methods["model_requested"] == "gpt-5-nano" and methods["model_reported"] is None
    assert methods["inclusion"] == CRITERIA["inclusion"] and methods["threshold"] == 1.0
    assert methods["reviewers"] == 2 and methods["service_version"]
    assert methods["run_started_at"] and methods["run_finished_at"]
    assert "not certified" in body["methods_text"] and "mock backend" in body["methods_text"]
    assert body["validation"] == []


def test_the_model_as_the_provider_reported_it(api, run_queue, fake_openai):
    job = screened(api, run_queue)
    methods = api.get(f"{URL}/{job['id']}/report").json()["methods"]
    assert methods["model_reported"] == "gpt-5-nano" and methods["llm_backend"] == "openai"


def test_validation_figures_with_their_sample_appear_in_json_and_markdown(api, reviewed_job):
    job_id = reviewed_job["id"]
    sample = api.post(f"{URL}/{job_id}/validation-samples", {"size": 3, "seed": 11}, format="json").json()
    # alice settles every sampled paper as exclude (p4's conflict with bob ends; p2 is overturned back).
    post_reviews(api, job_id, [review(pid, "exclude") for pid in sample["paper_ids"]] + [review("10.1000/x.5", "include")])
    body = api.get(f"{URL}/{job_id}/report", {"target_recall": "0.5"}).json()
    [validation] = body["validation"]
    assert validation["id"] == sample["id"] and validation["seed"] == 11 and validation["figures"]["sampled"] == 3
    assert "paper_ids" not in validation
    assert "uniform random sample of 3 of the 3 records the model excluded (seed 11)" in body["methods_text"]
    md = api.get(f"{URL}/{job_id}/report", {"format": "md", "target_recall": "0.5"})
    assert md.status_code == 200 and md["Content-Type"].startswith("text/markdown")
    text = md.content.decode()
    assert "## PRISMA 2020 flow" in text and "| Excluded by humans |" in text
    assert f"Sample {sample['id']}" in text and body["methods"]["prompt_sha256"] in text
    assert "- Inclusion 1: randomized trial" in text


def test_report_errors(api, anon, run_queue, mock_backend):
    job = screened(api, run_queue, run=False)
    path = f"{URL}/{job['id']}/report"
    assert anon.get(path).status_code == 401
    other = APIClient()
    other.credentials(HTTP_X_API_KEY="not-the-owner")
    assert other.get(path).status_code == 404
    assert api.get(f"{URL}/00000000-0000-0000-0000-000000000000/report").status_code == 404
    bad = api.get(path, {"format": "pdf"})
    assert bad.status_code == 400 and "format" in bad.json()["errors"]
    assert api.get(path, {"confidence": "2"}).status_code == 400
    assert api.post(path, {}, format="json").status_code == 405
    unfinished = api.get(path).json()
    assert unfinished["prisma"]["not_screened"] == 5 and unfinished["methods"]["status"] == "pending"


def test_admin_job_page_shows_review_progress_evaluation_and_samples(api, reviewed_job):
    job_id = reviewed_job["id"]
    api.post(f"{URL}/{job_id}/validation-samples", {"size": 2, "seed": 4}, format="json")
    user = get_user_model().objects.create_superuser("operator", "op@example.org", "pw-operator-123")
    client = Client()
    client.force_login(user)
    page = client.get(f"/admin/screening/screeningjob/{job_id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Human review and validation" in html
    assert "4 of 5 results reviewed: 3 with a human decision, 1 in conflict" in html
    assert "Recall (95 % exact interval)" in html and "not a random sample" in html
    assert "2 of 3" in html and "in review" in html

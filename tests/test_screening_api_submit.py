"""Submitting screening jobs over the API: verdicts, conflicts, idempotency, budget, provider faults, keys, uploads,
validation; with the worker path and the fake provider over HTTP."""

from __future__ import annotations

import json
import threading

import pytest

from crystallise.jobs.models import JobSecret
from screening.models import ScreeningJob
from tests.conftest import SERVER_OPENAI_KEY
from tests.factories import FIXTURES, cohen_papers, paper
from tests.screening_support import CRITERIA, PAPERS, URL, finished, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_happy_path_with_predictable_verdicts(api, fake_openai, run_queue):
    response = submit(api, project_id="proj-1")
    assert response.status_code == 202, response.json()
    job = response.json()
    assert job["status"] == "pending" and response["Retry-After"] == "2"
    assert job["estimated_cost_usd"] > 0 and job["error_category"] is None
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed"
    assert body["progress"] == {"total": 4, "screened": 4, "included": 1, "excluded": 3, "errored": 0}
    results = {r["paper_id"]: r for r in body["results"]}
    assert results["p1"]["decision"] == "include" and results["p1"]["score"] == 1.0
    assert results["p3"]["decision"] == "exclude" and results["p3"]["score"] == 0.0  # exclusion met
    assert results["p2"]["criteria"][0] == {
        "kind": "inclusion", "index": 0, "text": "randomized trial", "verdict": "not_met",
        "reasoning": results["p2"]["criteria"][0]["reasoning"]}
    assert all(r["llm_backend"] == "openai" for r in results.values())
    assert body["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"]
    assert body["usage"]["output_tokens"] == fake_openai.stats["completion_tokens"]
    assert body["cost_usd"] > 0 and body["cost_usd"] <= body["estimated_cost_usd"]
    assert fake_openai.count == 4
    assert fake_openai.stats["keys_seen"] == {SERVER_OPENAI_KEY: 4}
    assert body["clusters"] == [{"id": 0, "label": "all", "size": 4, "screened": 4, "included": 1}]
    assert "Retry-After" not in api.get(f"{URL}/{job['id']}")


def test_threshold_half_includes_unclear(api, fake_openai, run_queue):
    # p4 mentions only "migraine" of "migraine treatment trial": unclear → score 0.5
    criteria = {"inclusion": ["migraine treatment trial"], "exclusion": []}
    job = submit(api, criteria=criteria, threshold=0.5).json()
    body = finished(api, run_queue, job["id"])
    results = {r["paper_id"]: r for r in body["results"]}
    assert results["p4"]["score"] == 0.5 and results["p4"]["decision"] == "include"
    assert results["p4"]["needs_review"] is True
    strict = finished(api, run_queue, submit(api, criteria=criteria).json()["id"])
    assert {r["paper_id"]: r["decision"] for r in strict["results"]}["p4"] == "exclude"


def test_empty_but_completed(api, fake_openai, run_queue):
    job = submit(api, criteria={"inclusion": ["quantum chromodynamics lattice"]}).json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed" and body["progress"]["included"] == 0


def test_cluster_include_filter_skips_llm(api, fake_openai, run_queue):
    papers = [
        paper("r1", "A randomized controlled trial of sumatriptan", "Double-blind placebo-controlled randomized trial of migraine treatment."),
        paper("c1", "A case report of migraine", "We report a case of a woman with migraine treatment failure."),
    ]
    job = submit(api, papers=papers, clusters={"by": "study_design", "include": ["RCT"]}).json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed"
    results = {r["paper_id"]: r for r in body["results"]}
    assert results["c1"]["decision"] == "exclude" and results["c1"]["score"] is None
    assert results["c1"]["criteria"] == [] and "cluster" in results["c1"]["reasoning"]
    assert fake_openai.count == 1
    labels = {c["label"]: c for c in body["clusters"]}
    assert labels["case_report"]["screened"] == 1 and labels["rct"]["size"] == 1
    assert body["progress"]["excluded"] >= 1


def test_second_active_job_for_project_conflicts(api, fake_openai):
    first = submit(api, project_id="P").json()
    response = submit(api, project_id="P")
    assert response.status_code == 409
    assert response.json()["error_category"] == "conflict"
    assert response.json()["active_job_id"] == first["id"]
    assert submit(api).status_code == 202  # no project → no check


def test_concurrent_posts_one_wins(fake_openai, settings):
    from rest_framework.test import APIClient

    barrier = threading.Barrier(6)
    codes = []

    def post():
        from django.db import connection

        client = APIClient()
        client.credentials(HTTP_X_API_KEY="k")
        barrier.wait()
        try:
            codes.append(client.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "project_id": "race"}, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] + [409] * 5
    assert ScreeningJob.objects.filter(project_id="race").count() == 1


def test_idempotent_post_returns_same_job(api, fake_openai):
    first = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    again = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS[:1]}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert other.status_code == 409
    assert ScreeningJob.objects.count() == 1


def test_budget_preflight_rejects_before_any_call(api, fake_openai):
    response = submit(api, max_estimated_cost_usd=0.0000001)
    assert response.status_code == 400 and response.json()["error_category"] == "budget"
    assert fake_openai.count == 0 and ScreeningJob.objects.count() == 0


def test_provider_401_fails_job_with_auth(api, fake_openai, run_queue):
    fake_openai.config.valid_keys = {"sk-only-this"}
    job = submit(api).json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "failed" and body["error_category"] == "auth"
    assert "sk-" not in body["error_message"]


def test_429_and_5xx_are_survived(api, fake_openai, run_queue):
    fake_openai.config.script = ["429", "500", "500", "429"]
    body = finished(api, run_queue, submit(api).json()["id"])
    assert body["status"] == "completed" and body["progress"]["errored"] == 0


def test_exhausted_retries_on_one_paper_do_not_fail_job(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_LLM_MAX_ATTEMPTS = 2
    settings.CRYSTALLISE_LLM_CONCURRENCY = 1  # the scripted faults hit the first paper twice
    fake_openai.config.script = ["500", "500"]
    papers = PAPERS + [paper(f"x{i}", "Migraine randomized trial", "randomized trial of migraine treatment") for i in range(6)]
    body = finished(api, run_queue, submit(api, papers=papers).json()["id"])
    assert body["status"] == "completed"
    assert body["progress"]["errored"] == 1 and body["progress"]["screened"] == 10
    errored = [r for r in body["results"] if r["error"]]
    assert errored[0]["decision"] is None


def test_per_request_key_is_used_and_never_stored(api, fake_openai, run_queue):
    secret = "sk-per-request-SECRET-123456"
    response = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json", HTTP_X_OPENAI_API_KEY=secret)
    job_id = response.json()["id"]
    assert JobSecret.objects.filter(job_id=job_id).exists()
    body = finished(api, run_queue, job_id)
    assert body["status"] == "completed"
    assert fake_openai.stats["keys_seen"] == {secret: 4}
    assert not JobSecret.objects.exists()
    from django.db import connection

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            assert secret not in repr(cursor.fetchall()), table


def test_no_openai_key_fails_fast(api, fake_openai, settings):
    settings.CRYSTALLISE_OPENAI_API_KEY = ""
    response = submit(api)
    assert response.status_code == 400 and response.json()["error_category"] == "auth"


@pytest.mark.parametrize("name", ["papers.ris", "papers.csv", "papers.nbib", "papers.jsonl"])
def test_file_uploads(api, fake_openai, name):
    with open(FIXTURES / name, "rb") as fh:
        response = api.post(URL, {"criteria": json.dumps(CRITERIA), "papers_file": fh}, format="multipart")
    assert response.status_code == 202, response.json()
    assert response.json()["progress"]["total"] >= 3


@pytest.mark.parametrize("body,field", [
    ({"papers": PAPERS, "criteria": {"inclusion": [], "exclusion": []}}, "criteria"),
    ({"papers": PAPERS + [PAPERS[0]], "criteria": CRITERIA}, "papers"),
    ({"papers": PAPERS, "criteria": CRITERIA, "threshold": 1.5}, "threshold"),
    ({"papers": PAPERS, "criteria": CRITERIA, "model": "gpt-9"}, "model"),
    ({"papers": PAPERS, "criteria": CRITERIA, "max_estimated_cost_usd": -1}, "max_estimated_cost_usd"),
    ({"papers": PAPERS, "criteria": CRITERIA, "surprise": 1}, "surprise"),
    ({"criteria": CRITERIA}, "papers"),
])
def test_invalid_input_is_400_and_stores_nothing(api, fake_openai, body, field):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    payload = response.json()
    assert payload["error_category"] == "validation"
    assert any(key.startswith(field) for key in payload.get("errors", {})) or field in payload["detail"]
    assert ScreeningJob.objects.count() == 0


def test_real_dataset_job_with_mock_backend(api, settings, run_queue):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    papers = [{k: v for k, v in p.items() if k != "label"} for p in cohen_papers("Triptans", limit=120)]
    job = api.post(URL, {"criteria": CRITERIA, "papers": papers, "clusters": {"by": "topic", "count": 3}}, format="json").json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed" and body["progress"]["screened"] == 120
    assert body["cost_usd"] == 0 and all(r["llm_backend"] == "mock" for r in body["results"])
    assert sum(c["size"] for c in body["clusters"]) == 120


def test_project_ids_are_namespaced_by_key(api, fake_openai):
    from rest_framework.test import APIClient

    submit(api, project_id="shared-name")
    other = APIClient()
    other.credentials(HTTP_X_API_KEY="another-team")
    response = other.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "project_id": "shared-name"}, format="json")
    assert response.status_code == 202

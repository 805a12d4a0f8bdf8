"""Index jobs in the batch lane, the mock backend's batch lane, and the commands' --batch."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.management import call_command

from crystallise.tasks import poll_batches
from crystallise.tokens import cost_usd
from indexer.models import IndexJob, IndexResult
from screening.models import ScreeningJob
from tests.test_batch import CRITERIA, PAPERS
from tests.test_indexer import BAD, EXPECTED_BAD, real_records

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = "/v1/indexer/jobs"


@pytest.fixture(autouse=True)
def _poll_at_once(settings):
    settings.CRYSTALLISE_BATCH_POLL_SECONDS = 0


def test_index_job_in_the_batch_lane(api, fake_openai, run_queue):
    records = real_records(4) + BAD
    online = api.post(JOBS, {"records": records, "fields": ["population", "study_design"]}, format="json").json()
    response = api.post(JOBS, {"records": records, "fields": ["population", "study_design"], "mode": "batch"},
                        format="json")
    assert response.status_code == 202, response.json()
    job = response.json()
    assert job["mode"] == "batch" and abs(job["estimated_cost_usd"] * 2 - online["estimated_cost_usd"]) < 1e-7
    api.delete(f"{JOBS}/{online['id']}")
    run_queue()
    body = api.get(f"{JOBS}/{job['id']}").json()
    # The prechecked records are decided at submission; the others wait for the batch.
    assert body["status"] == "running" and body["progress"]["processed"] == len(BAD)
    assert body["batches"][0]["request_counts"]["total"] == 4
    for _ in range(5):
        poll_batches()
    body = api.get(f"{JOBS}/{job['id']}").json()
    assert body["status"] == "completed", body
    assert body["progress"] == {"total": 10, "processed": 10, "ok": 4, "errored": 6}
    results = {r["id"]: r for r in api.get(f"{JOBS}/{job['id']}/results", {"page_size": 100}).json()["results"]}
    assert {k: results[k]["indexing_status"] for k in EXPECTED_BAD} == EXPECTED_BAD
    assert all(set(results[r["id"]]["fields"]) == {"population", "study_design"} for r in records[:4])
    assert body["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"] > 0
    row = IndexJob.objects.get(pk=job["id"])
    assert abs(row.cost_usd - row.actual_cost()) <= Decimal("0.00000004") and row.price_tier == "batch"
    assert row.actual_cost() == cost_usd(row.model, row.usage, "batch") > 0
    assert fake_openai.batches.stats["lines"] == 4


def test_the_mock_backend_answers_a_batch_job_at_once(api, settings, run_queue):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    job = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": PAPERS, "mode": "batch"},
                   format="json").json()
    run_queue()
    body = api.get(f"/v1/screening/jobs/{job['id']}").json()
    assert body["status"] == "completed", body
    assert body["progress"]["screened"] == 4 and body["cost_usd"] == 0
    assert body["batches"][0]["status"] == "completed" and body["batches"][0]["id"].startswith("batch_mock_")


def test_index_records_command_with_batch(fake_openai, tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in real_records(3)))
    call_command("index_records", str(path), "--batch", "--poll-seconds", "0")
    job = IndexJob.objects.get()
    assert job.mode == "batch" and job.status == "completed"
    assert IndexResult.objects.filter(job=job, indexing_status="ok").count() == 3
    assert fake_openai.batches.stats["batches"] == 1


def test_screen_command_with_batch(fake_openai, tmp_path):
    path = tmp_path / "papers.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAPERS))
    criteria = tmp_path / "criteria.json"
    criteria.write_text(json.dumps(CRITERIA))
    call_command("screen", str(path), "--criteria", str(criteria), "--batch", "--poll-seconds", "0")
    job = ScreeningJob.objects.get()
    assert job.mode == "batch" and job.status == "completed" and job.screened == 4
    assert fake_openai.batches.stats["batches"] == 1


def test_index_job_in_the_flex_tier(api, fake_openai, run_queue):
    fake_openai.config.flex_unavailable = 1
    job = api.post(JOBS, {"records": real_records(3), "service_tier": "flex"}, format="json").json()
    assert job["service_tier"] == "flex"
    run_queue()
    body = api.get(f"{JOBS}/{job['id']}").json()
    assert body["status"] == "completed" and body["progress"]["ok"] == 3
    assert [r["body"].get("service_tier") for r in fake_openai.requests].count("flex") == 4  # one refused, retried
    row = IndexJob.objects.get(pk=job["id"])
    assert abs(row.cost_usd - cost_usd(row.model, row.usage, "flex")) <= Decimal("0.00000003") and row.cost_usd > 0

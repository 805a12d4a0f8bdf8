"""Screening in the batch lane end to end: the API, the worker's first tick (submit), the poll
schedule's ticks (collect, resubmit, conclude), against the fake's files and batches over HTTP."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from crystallise.tasks import poll_batches
from crystallise.tokens import Usage, cost_usd
from screening.models import ScreeningJob, ScreeningResult
from tests.factories import paper
from tests.screening_support import CRITERIA, PAPERS, URL

pytestmark = pytest.mark.django_db(transaction=True)



@pytest.fixture(autouse=True)
def _poll_at_once(settings):
    settings.CRYSTALLISE_BATCH_POLL_SECONDS = 0


def submit(api, papers=PAPERS, **body):
    payload = {"criteria": CRITERIA, "papers": papers, "mode": "batch", **body}
    return api.post(URL, payload, format="json")


def drive(api, run_queue, job_id, polls: int = 10) -> dict:
    """The worker's run, then the schedule's polls until the job ends."""
    run_queue()
    for _ in range(polls):
        body = api.get(f"{URL}/{job_id}").json()
        if body["status"] not in ("pending", "running"):
            return body
        poll_batches()
    return api.get(f"{URL}/{job_id}").json()


def many(n: int) -> list[dict]:
    return [paper(f"m{i}", f"Migraine treatment trial {i}", f"A randomized trial of migraine treatment, cohort {i}.")
            for i in range(n)]


def test_batch_job_screens_every_paper_at_half_price(api, fake_openai, run_queue):
    online = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json").json()
    response = submit(api)
    assert response.status_code == 202, response.json()
    job = response.json()
    assert job["mode"] == "batch" and job["fallback"] == "none" and job["batches"] == []
    half = Decimal(str(online["estimated_cost_usd"])) / 2
    assert abs(Decimal(str(job["estimated_cost_usd"])) - half) <= Decimal("0.00000001")
    api.delete(f"{URL}/{online['id']}")

    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert body["status"] == "running" and body["progress"]["screened"] == 0
    assert [b["status"] for b in body["batches"]] == ["validating"]
    assert body["batches"][0]["request_counts"]["total"] == 4 and body["batches"][0]["id"].startswith("batch_")

    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed", body
    assert body["progress"] == {"total": 4, "screened": 4, "included": 1, "excluded": 3, "errored": 0}
    assert body["batches"][0]["status"] == "completed"
    assert body["batches"][0]["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    results = {r["paper_id"]: r["decision"] for r in api.get(f"{URL}/{job['id']}/results").json()["results"]}
    assert results == {"p1": "include", "p2": "exclude", "p3": "exclude", "p4": "exclude"}
    stats = fake_openai.stats
    assert body["usage"]["input_tokens"] == stats["prompt_tokens"] > 0
    row = ScreeningJob.objects.get(pk=job["id"])
    # Each answer is priced on its own (rounded to 1e-8 USD): the total may differ by that per paper.
    assert row.actual_cost() == cost_usd(row.model, row.usage, "batch") > 0
    assert abs(row.cost_usd - row.actual_cost()) <= Decimal("0.00000004")
    assert abs(row.cost_usd * 2 - cost_usd(row.model, row.usage)) <= Decimal("0.00000002")
    assert fake_openai.batches.stats["batches"] == 1 and fake_openai.batches.stats["lines"] == 4


def test_lines_answered_with_errors_are_resubmitted_alone(api, fake_openai, run_queue):
    fake_openai.batches.config.script = ["all_failed"]
    job = submit(api).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed", body
    assert body["progress"]["screened"] == 4 and body["progress"]["errored"] == 0
    assert [b["round"] for b in body["batches"]] == [1, 2]
    assert body["batches"][0]["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    assert fake_openai.batches.stats["submitted"] == {f"p{i}": 2 for i in range(4)}


def test_expired_batch_keeps_its_answers_and_resubmits_the_rest(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_MAX_REQUESTS = 5
    fake_openai.batches.config.script = ["ok", "expire:0.4"]
    job = submit(api, papers=many(10)).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed", body
    assert ScreeningResult.objects.filter(job_id=job["id"], error_category__isnull=True).count() == 10
    statuses = [(b["status"], b["round"], b["request_counts"]["total"]) for b in body["batches"]]
    assert statuses == [("completed", 1, 5), ("expired", 1, 5), ("completed", 2, 3)]
    submitted = fake_openai.batches.stats["submitted"]
    assert sorted(c for c, n in submitted.items() if n == 2) == ["p7", "p8", "p9"]


def test_failed_validation_gives_the_reason_and_resubmits(api, fake_openai, run_queue):
    fake_openai.batches.config.script = ["fail_token_limit"]
    job = submit(api).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed", body
    assert body["batches"][0]["status"] == "failed"
    assert "token_limit_exceeded" in body["batches"][0]["error"]
    assert body["progress"]["screened"] == 4 and body["progress"]["errored"] == 0


def test_a_line_the_batch_refuses_fails_alone(api, fake_openai, run_queue):
    fake_openai.batches.config.script = ["fail_validation"]
    job = submit(api).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed", body
    first = ScreeningResult.objects.get(job_id=job["id"], position=0)
    assert first.error_category == "validation" and "line 1" in first.error
    assert body["progress"] == {"total": 4, "screened": 4, "included": 0, "excluded": 3, "errored": 1}


def test_lines_still_failing_after_the_last_round_get_their_error(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_MAX_ROUNDS = 2
    fake_openai.batches.config.script = ["all_failed", "all_failed"]
    job = submit(api).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "failed" and body["error_category"] == "upstream"
    assert body["progress"]["errored"] == 4 and len(body["batches"]) == 2
    assert set(ScreeningResult.objects.filter(job_id=job["id"]).values_list("error_category", flat=True)) == {"upstream"}


def test_fallback_online_answers_what_the_batches_did_not(api, fake_openai, run_queue):
    fake_openai.batches.config.script = ["expire:0.5"]
    job = submit(api, fallback="online").json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed", body
    assert body["progress"]["screened"] == 4 and body["progress"]["errored"] == 0
    online_calls = [r for r in fake_openai.requests if r["path"] == "/v1/chat/completions"]
    assert len(online_calls) == 2 and len(body["batches"]) == 1
    # Online answers bill at the online price, the batch's at the batch price.
    rows = ScreeningResult.objects.filter(job_id=job["id"]).order_by("position")
    expected = sum((cost_usd("gpt-5-nano", Usage(r.input_tokens, r.cached_input_tokens, r.output_tokens),
                             "batch" if r.position < 2 else "default") for r in rows), Decimal("0"))
    assert abs(ScreeningJob.objects.get(pk=job["id"]).cost_usd - expected) <= Decimal("0.00000004")


def test_cancel_cancels_the_batches_and_keeps_what_they_returned(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_MAX_REQUESTS = 5
    fake_openai.batches.config.steps = 5
    job = submit(api, papers=many(10)).json()
    run_queue()
    body = api.delete(f"{URL}/{job['id']}").json()
    assert body["status"] == "cancelled"
    assert fake_openai.batches.stats["cancels"] == 2
    assert [b["status"] for b in body["batches"]] == ["cancelling", "cancelling"]
    poll_batches()
    body = api.get(f"{URL}/{job['id']}").json()
    assert [b["status"] for b in body["batches"]] == ["cancelled", "cancelled"]
    # Half of each batch ran before the cancel: those answers are kept, nothing is resubmitted.
    assert body["progress"]["screened"] == 4 and ScreeningResult.objects.filter(job_id=job["id"]).count() == 4
    assert fake_openai.batches.stats["batches"] == 2
    poll_batches()
    assert fake_openai.batches.stats["retrieves"] == 2


def test_a_restarted_worker_resumes_polling_and_submits_nothing_twice(api, fake_openai, run_queue, settings):
    from crystallise.jobs.batch.poll import tick_running

    fake_openai.batches.config.steps = 3
    job = submit(api).json()
    run_queue()
    # The schedule ticks twice at once (two workers), then a worker dies mid-tick: its heartbeat goes stale.
    poll_batches()
    assert tick_running(ScreeningJob, job["id"]) is None
    from datetime import timedelta

    from django.utils import timezone
    ScreeningJob.objects.filter(pk=job["id"]).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    from crystallise.jobs.lifecycle import recover
    assert recover(model=ScreeningJob)["resumed"] == 1
    body = drive(api, run_queue, job["id"], polls=20)
    assert body["status"] == "completed", body
    assert fake_openai.batches.stats["batches"] == 1
    assert set(fake_openai.batches.stats["submitted"].values()) == {1}


def test_mode_is_validated(api, fake_openai):
    for body, field in [({"mode": "later"}, "mode"), ({"mode": "batch", "service_tier": "flex"}, "service_tier"),
                        ({"mode": "online", "fallback": "online"}, "fallback"),
                        ({"mode": "online", "service_tier": "flex", "model": "gpt-4o-mini"}, "service_tier")]:
        response = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS, **body}, format="json")
        assert response.status_code == 400, body
        assert response.json()["error_category"] == "validation" and field in response.json()["errors"], response.json()


def test_the_cost_cap_stops_the_job_and_cancels_its_batches(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_MAX_REQUESTS = 5
    fake_openai.batches.config.steps = 0
    fake_openai.batches.config.script = ["ok", "expire:0"]
    job = submit(api, papers=many(10), max_estimated_cost_usd="1").json()
    ScreeningJob.objects.filter(pk=job["id"]).update(max_estimated_cost_usd=Decimal("0.00000001"))
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "failed" and body["error_category"] == "budget", body
    assert body["progress"]["screened"] == 5 and len(body["batches"]) == 2


def test_a_cancelled_job_on_a_request_key_keeps_what_had_ended(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_BATCH_MAX_REQUESTS = 5
    fake_openai.batches.config.steps = 3
    response = api.post(URL, {"criteria": CRITERIA, "papers": many(10), "mode": "batch"}, format="json",
                        HTTP_X_OPENAI_API_KEY="sk-request-key-0001")
    job = response.json()
    run_queue()
    body = api.delete(f"{URL}/{job['id']}").json()
    assert body["status"] == "cancelled" and fake_openai.batches.stats["cancels"] == 2
    poll_batches()
    body = api.get(f"{URL}/{job['id']}").json()
    assert [b["error"] for b in body["batches"]] == ["Not collected: the job's key is gone."] * 2
    poll_batches()
    assert fake_openai.batches.stats["retrieves"] == 0


def test_batches_wait_for_room_under_the_enqueued_token_cap(api, fake_openai, run_queue, settings):
    from crystallise.tokens import count_message_tokens
    from screening import prompts

    one = count_message_tokens(prompts.messages_for(prompts.system_prompt(CRITERIA), "Migraine treatment trial 0",
                                                    "A randomized trial of migraine treatment, cohort 0.", []))
    cap = one * 3 + 10  # room for three requests at a time
    settings.CRYSTALLISE_BATCH_ENQUEUED_TOKENS = {"gpt-5-nano": cap}
    fake_openai.batches.config.enqueued_token_limit = cap
    job = submit(api, papers=many(7)).json()
    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert [b["request_counts"]["total"] for b in body["batches"]] == [3]
    body = drive(api, run_queue, job["id"], polls=30)
    assert body["status"] == "completed" and body["progress"]["screened"] == 7, body
    assert [b["request_counts"]["total"] for b in body["batches"]] == [3, 3, 1]
    assert {b["status"] for b in body["batches"]} == {"completed"}


def test_a_batch_whose_create_reply_was_lost_is_found_not_created_again(api, fake_openai, run_queue):
    fake_openai.batches.config.lose_create_replies = 1
    job = submit(api).json()
    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert [(b["id"], b["status"]) for b in body["batches"]] == [(None, "uploaded")]
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed" and body["progress"]["screened"] == 4, body
    assert fake_openai.batches.stats["batches"] == 1 and body["batches"][0]["id"].startswith("batch_")


@pytest.mark.parametrize("wait", ["create_wait_before", "create_wait_after"])
def test_a_job_cancelled_while_its_batch_is_created_leaves_no_batch_running(api, fake_openai, run_queue, wait):
    # The cancel lands while the worker's create is at the provider: before the batch exists (the
    # worker learns its id only once it lost the job), or after it exists but before its id is recorded.
    fake_openai.batches.config.steps = 5
    setattr(fake_openai.batches.config, wait, 1.0)
    job = submit(api).json()
    cancelled: dict = {}

    def cancel_during_the_create() -> None:
        try:
            deadline = time.monotonic() + 30
            while fake_openai.batches.stats["creates"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            cancelled["body"] = api.delete(f"{URL}/{job['id']}").json()
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_during_the_create)
    canceller.start()
    run_queue()
    canceller.join()
    assert cancelled["body"]["status"] == "cancelled"
    poll_batches()
    # The one batch made is being cancelled (or is), whoever learnt its id; nothing else was created.
    assert [b["status"] for b in fake_openai.batches.batches.values()] in (["cancelling"], ["cancelled"])
    body = api.get(f"{URL}/{job['id']}").json()
    assert body["status"] == "cancelled" and body["progress"]["screened"] <= 4
    assert fake_openai.batches.stats["batches"] == 1


def test_billed_errors_of_the_online_fallback_are_priced_online(api, fake_openai, run_queue):
    # The batch expires having answered nothing: every paper goes online, where every answer is off-schema
    # (billed, retried, then the paper's error). All of it was billed at the online price.
    fake_openai.batches.config.script = ["expire:0"]
    job = submit(api, fallback="online").json()
    run_queue()
    fake_openai.config.p_schema_invalid = 1.0
    body = drive(api, run_queue, job["id"])
    # More than half the papers failed: the job is failed, its cost stands.
    assert body["status"] == "failed" and body["progress"]["errored"] == 4, body
    saved = ScreeningJob.objects.get(pk=job["id"])
    assert saved.input_tokens > 0
    assert saved.cost_usd == cost_usd("gpt-5-nano", saved.usage, "default")


def test_the_poll_schedule_is_installed_by_the_migrations():
    import importlib

    from django.apps import apps
    from django_q.models import Schedule

    # The test database is flushed between tests: run the migration's function again, twice (idempotent).
    migration = importlib.import_module("screening.migrations.0007_batch_lane")
    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)
    schedule = Schedule.objects.get(name="crystallise.poll_batches")
    assert schedule.func == "crystallise.tasks.poll_batches" and schedule.minutes == 1 and schedule.repeats == -1


def test_a_failed_upload_is_retried_at_the_next_poll(api, fake_openai, run_queue):
    fake_openai.batches.config.fail_uploads = 1
    job = submit(api).json()
    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert body["status"] == "running" and body["batches"] == []
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed" and len(body["batches"]) == 1, body


def test_a_rejected_key_fails_the_job(api, fake_openai, run_queue):
    job = submit(api).json()
    fake_openai.config.valid_keys = {"sk-some-other-key"}
    run_queue()
    body = api.get(f"{URL}/{job['id']}").json()
    assert body["status"] == "failed" and body["error_category"] == "auth" and body["batches"] == []


def test_a_key_out_of_quota_inside_the_batch_fails_the_job_as_online(api, fake_openai, run_queue):
    # 429 insufficient_quota is no rate limit to wait out: as online, the job ends `auth`, nothing resubmitted.
    fake_openai.batches.config.update({"p_line_error": 1.0, "line_error_status": 429,
                                       "line_error_code": "insufficient_quota"})
    job = submit(api).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "failed" and body["error_category"] == "auth", body
    assert "out of quota" in body["error_message"]
    assert fake_openai.batches.stats["batches"] == 1


def test_an_answer_that_does_not_fit_the_schema_is_retried_and_its_tokens_counted(api, fake_openai, run_queue):
    fake_openai.config.script = ["schema_invalid"]  # the batch's first answered line
    job = submit(api).json()
    body = drive(api, run_queue, job["id"])
    assert body["status"] == "completed" and body["progress"]["errored"] == 0, body
    assert [b["request_counts"]["total"] for b in body["batches"]] == [4, 1]
    # Billed, so counted: the job's usage is every token the provider answered with, the discarded answer's too.
    assert body["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"]
    assert body["usage"]["output_tokens"] == fake_openai.stats["completion_tokens"]

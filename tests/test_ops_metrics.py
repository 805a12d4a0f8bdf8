"""GET /metrics: who may read it, what it shows, and that counters made in worker processes reach it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from crystallise.metrics.store import TALLY, MetricCounter
from screening.models import ScreeningJob
from tests.conftest import SERVER_OPENAI_KEY
from tests.factories import paper
from tests.ops_services import service_env, start_qcluster, stop, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-0123456789abcdef"
JOBS = "/v1/screening/jobs"
CRITERIA = {"inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["children"]}


def papers(n: int) -> list[dict]:
    return [paper(f"p{i}", f"Trial {i}", "A randomized trial of migraine treatment in adults.") for i in range(n)]


@pytest.fixture(autouse=True)
def token(settings):
    settings.CRYSTALLISE_METRICS_TOKEN = TOKEN
    TALLY.flush()  # nothing left over from another test's calls


def scrape(client: Client | None = None) -> dict[tuple, float]:
    """{(sample name, frozenset of labels): value}"""
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


# --- access ---------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer "])
def test_metrics_refuse_anyone_without_the_token_or_a_staff_login(header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = Client().get("/metrics", **extra)
    assert response.status_code == 401
    assert response.json()["error_category"] == "auth" and "CRYSTALLISE_METRICS_TOKEN" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_metrics_without_a_configured_token_accept_no_bearer(settings):
    settings.CRYSTALLISE_METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_staff_sessions_read_metrics_and_other_users_do_not():
    users = get_user_model().objects
    staff, plain = Client(), Client()
    staff.force_login(users.create_user("ops", password="x", is_staff=True))
    plain.force_login(users.create_user("someone", password="x"))
    assert staff.get("/metrics").status_code == 200
    assert plain.get("/metrics").status_code == 401


def test_metrics_take_only_get():
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405 and response.json()["error_category"] == "validation"


# --- what is shown ------------------------------------------------------------------


def test_a_job_run_shows_in_every_family(api, fake_openai, run_queue):
    n = 6
    job_id = api.post(JOBS, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    queued = scrape()
    assert value(queued, "crystallise_jobs", kind="screening", status="pending", lane="online") == 1
    assert value(queued, "crystallise_queue_tasks", state="waiting") == 1
    run_queue()
    job = ScreeningJob.objects.get(pk=job_id)
    assert job.status == "completed"
    samples = scrape()
    assert value(samples, "crystallise_jobs", kind="screening", status="completed") == 1
    assert value(samples, "crystallise_jobs", kind="screening", status="pending") == 0
    assert value(samples, "crystallise_queue_tasks", state="waiting") == 0
    assert value(samples, "crystallise_llm_requests_total", model="gpt-5-nano", outcome="ok") == n
    assert value(samples, "crystallise_llm_tokens_total", model="gpt-5-nano", type="input") == job.input_tokens
    assert value(samples, "crystallise_llm_tokens_total", model="gpt-5-nano", type="output") == job.output_tokens
    assert value(samples, "crystallise_llm_cost_usd_total", model="gpt-5-nano") == pytest.approx(float(job.cost_usd), rel=1e-3)
    assert value(samples, "crystallise_llm_request_seconds_count", model="gpt-5-nano") == n
    assert value(samples, "crystallise_llm_request_seconds_bucket", model="gpt-5-nano", le="+Inf") == n
    decided = value(samples, "crystallise_job_items_total", kind="screening", lane="online")
    assert decided == n == job.included + job.excluded + job.errored
    assert value(samples, "crystallise_job_duration_seconds_count", kind="screening", status="completed") == 1


def test_a_keys_limits_and_the_shares_held_of_it_are_shown_by_key_fingerprint(api, fake_openai, run_queue):
    from crystallise.keyvault import key_fingerprint
    from crystallise.ratelimit import lease

    fake_openai.config.rpm, fake_openai.config.tpm = 6000, 2_400_000
    api.post(JOBS, {"criteria": CRITERIA, "papers": papers(3)}, format="json")
    run_queue()
    key = key_fingerprint(SERVER_OPENAI_KEY)[:12]
    samples = scrape()
    assert value(samples, "crystallise_rate_limit_requests_per_minute", key=key) == 6000
    assert value(samples, "crystallise_rate_limit_tokens_per_minute", key=key) == 2_400_000
    # The job ended: it gave its share back.
    assert value(samples, "crystallise_rate_limit_holders", key=key) == 0
    # Two runs on the key now (as two workers would hold): their shares add up to the whole limit at most.
    fingerprint = key_fingerprint(SERVER_OPENAI_KEY)
    for holder in ("a", "b", "a", "b"):
        lease.renew(fingerprint, holder, demand=None)
    samples = scrape()
    assert value(samples, "crystallise_rate_limit_holders", key=key) == 2
    assert value(samples, "crystallise_rate_limit_share_held", key=key) == pytest.approx(1.0)
    assert SERVER_OPENAI_KEY not in str(samples)


def test_failed_provider_requests_are_counted_by_error_category(api, fake_openai, run_queue):
    fake_openai.config.script = ["500", "429", "ok"]
    api.post(JOBS, {"criteria": CRITERIA, "papers": papers(1)}, format="json")
    run_queue()
    samples = scrape()
    assert value(samples, "crystallise_llm_requests_total", outcome="error", error_category="upstream") == 1
    assert value(samples, "crystallise_llm_requests_total", outcome="error", error_category="rate_limit") == 1
    assert value(samples, "crystallise_llm_requests_total", outcome="ok") == 1


def test_counters_are_kept_while_the_database_is_unavailable(monkeypatch):
    from django.db import OperationalError

    from crystallise.metrics import store
    from crystallise.metrics.record import llm_request

    llm_request(model="gpt-5-nano", seconds=0.2, outcome="ok", category=None, usage=None)

    class Down:
        def __enter__(self):
            raise OperationalError("server closed the connection unexpectedly")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(store.transaction, "atomic", lambda: Down())
    assert TALLY.flush() is False and TALLY.pending()
    monkeypatch.undo()
    assert TALLY.flush() is True and not TALLY.pending()
    assert value(scrape(), "crystallise_llm_requests_total", outcome="ok") == 1


def test_metrics_never_show_a_secret(api, fake_openai, run_queue):
    secret = "sk-per-request-metrics-5555555555"
    api.post(JOBS, {"criteria": CRITERIA, "papers": papers(2)}, format="json", HTTP_X_OPENAI_API_KEY=secret)
    run_queue()
    body = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert "crystallise_llm_requests_total" in body
    assert secret not in body and "sk-" not in body and "test-service-key" not in body
    assert all(secret not in row.labels for row in MetricCounter.objects.all())


# --- across processes: a real worker cluster ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_calls_made_by_a_separate_worker_process_reach_the_web_metrics(api, fake_openai, tmp_path):
    from tests.workers import database_url

    n = 5
    env = service_env(database_url(), fake_openai.base_url, SERVER_OPENAI_KEY)
    log = tmp_path / "qcluster.log"
    worker = start_qcluster(env, log)
    try:
        job_id = api.post(JOBS, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
        wait_until(lambda: ScreeningJob.objects.get(pk=job_id).status == "completed", 60, "the worker to finish")
        # The worker flushes its counters when the run ends, right after it writes the job's last state.
        wait_until(lambda: value(scrape(), "crystallise_llm_requests_total", outcome="ok") == n, 10,
                   "the worker's counters")
    finally:
        stop(worker)
    samples = scrape()
    assert value(samples, "crystallise_job_items_total", kind="screening") == n
    assert value(samples, "crystallise_job_duration_seconds_count", kind="screening", status="completed") == 1
    assert not TALLY.pending()  # nothing was counted in this (the web's) process


def test_a_batch_job_counts_in_the_batch_lane(api, fake_openai, run_queue, settings):
    from crystallise.tasks import poll_batches

    settings.CRYSTALLISE_BATCH_POLL_SECONDS = 0
    n = 4
    job_id = api.post(JOBS, {"criteria": CRITERIA, "papers": papers(n), "mode": "batch"}, format="json").json()["id"]
    run_queue()  # the worker's run submits the batch
    assert value(scrape(), "crystallise_jobs", kind="screening", lane="batch", status="running") == 1
    for _ in range(10):
        if ScreeningJob.objects.get(pk=job_id).status == "completed":
            break
        poll_batches()  # the schedule's polls collect the answers and conclude
    assert ScreeningJob.objects.get(pk=job_id).status == "completed"
    samples = scrape()
    assert value(samples, "crystallise_jobs", kind="screening", lane="batch", status="completed") == 1
    assert value(samples, "crystallise_job_items_total", kind="screening", lane="batch") == n
    assert value(samples, "crystallise_job_items_total", lane="online") == 0
    assert value(samples, "crystallise_job_duration_seconds_count", kind="screening", lane="batch",
                 status="completed") == 1

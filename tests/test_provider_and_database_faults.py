"""Provider and database faults during real jobs.

The provider is the OpenAI-compatible fake over real HTTP; jobs run with the
service's own runner. Every scenario checks the same invariants: the job ends
in a terminal state, each paper has exactly one outcome (a decision or an
error), and the progress counters equal the result rows.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from screening.models import ScreeningJob, ScreeningResult
from screening.services import job_run
from tests.factories import CRITERIA, papers
from tests.workers import make_stale, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/screening/jobs"

TERMINAL = {"completed", "failed", "cancelled"}


def assert_one_outcome_per_paper(job_id, n: int) -> ScreeningJob:
    job = ScreeningJob.objects.get(pk=job_id)
    rows = list(ScreeningResult.objects.filter(job=job).values_list("position", "decision", "error"))
    positions = [p for p, _, _ in rows]
    assert len(positions) == len(set(positions)), "a paper has two results"
    assert all((decision is None) != (error is None) for _, decision, error in rows), "a result is neither decided nor errored"
    assert job.screened == len(rows) and job.included + job.excluded + job.errored == len(rows)
    assert job.errored == sum(decision is None for _, decision, _ in rows)
    if job.status == "completed":
        assert sorted(positions) == list(range(n)), "a paper was lost"
    return job


def test_noisy_provider_job_completes_with_every_paper_decided_or_errored(api, fake_openai, settings):
    """500 papers against 20% 5xx, 429 bursts with Retry-After, 2% hangs past the timeout,
    1% truncated bodies and 1% schema-invalid answers (seeded)."""
    settings.CRYSTALLISE_LLM_TIMEOUT = 1.0
    settings.CRYSTALLISE_LLM_BACKOFF = 0.01
    settings.CRYSTALLISE_LLM_CONCURRENCY = 32
    cfg = fake_openai.config
    cfg.seed = 7
    fake_openai.reset()
    cfg.latency, cfg.hang_seconds, cfg.fault_retry_after = 0.002, 3.0, 0.05
    cfg.p_500, cfg.p_429, cfg.p_hang, cfg.p_malformed, cfg.p_schema_invalid = 0.20, 0.02, 0.02, 0.01, 0.01
    cfg.script = ["429"] * 40  # an opening burst of 429s; more arrive below, mid-job
    n = 500
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]

    import threading

    def second_burst() -> None:
        wait_for(lambda: fake_openai.count > 250, timeout=60)
        cfg.script = ["429"] * 40

    burst = threading.Thread(target=second_burst, daemon=True)
    burst.start()
    started = time.monotonic()
    assert job_run(job_id=job_id) == "completed"
    elapsed = time.monotonic() - started
    burst.join(timeout=5)

    job = assert_one_outcome_per_paper(job_id, n)
    faults = fake_openai.stats["faults"]
    assert faults["429"] >= 80 and faults["500"] > 50 and faults["hang"] > 0
    assert faults["malformed"] > 0 and faults["schema_invalid"] > 0
    # Five attempts per paper make a lost paper rare; errored papers carry an error and count.
    assert job.errored <= 10, job.errored
    assert ScreeningResult.objects.filter(job=job, decision__isnull=True, error__isnull=True).count() == 0
    # Billed output was recorded, including for the bad answers that were retried.
    assert job.output_tokens > 0 and job.cost_usd > 0
    assert elapsed < 60
    print(f"noisy job: papers={n} requests={fake_openai.count} faults={faults} errored={job.errored} "
          f"elapsed={elapsed:.1f}s")


def test_provider_auth_failure_mid_job_fails_auth_and_keeps_results(api, fake_openai, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 8
    fake_openai.config.latency = 0.005
    fake_openai.config.fail_after = 100
    fake_openai.config.fail_after_status = 401
    n = 300
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    started = time.monotonic()
    assert job_run(job_id=job_id) == "failed"
    assert time.monotonic() - started < 10
    # Promptly: a rejected key is permanent, so only calls in flight follow the first 401.
    assert fake_openai.count <= 100 + 2 * 8
    body = api.get(f"{URL}/{job_id}").json()
    assert body["status"] == "failed" and body["error_category"] == "auth"
    assert body["error_message"]
    job = assert_one_outcome_per_paper(job_id, n)
    assert 90 <= job.screened - job.errored <= 100  # what was answered before the 401 is kept
    page = api.get(f"{URL}/{job_id}/results", {"page_size": 1000}).json()
    decided = [r for r in page["results"] if r["decision"] is not None]
    assert len(decided) == job.screened - job.errored
    assert len(page["results"]) == job.screened




def test_failed_batch_write_never_loses_papers(api, fake_openai, monkeypatch):
    """Deterministic twin of the connection-loss test: one batch write fails as a dropped connection would."""
    from django.db import OperationalError

    from crystallise.jobs.runner import run_job
    from screening.services import ScreeningKind

    failures = [1]

    class DroppedConnectionOnce(ScreeningKind):
        def write(self, job, outcomes):
            if failures[0]:
                failures[0] -= 1
                raise OperationalError("server closed the connection unexpectedly")
            super().write(job, outcomes)

    fake_openai.config.latency = 0.01
    n = 120
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    status = run_job(DroppedConnectionOnce(), job_id, concurrency=4)
    assert failures == [0]
    job = assert_one_outcome_per_paper(job_id, n)
    if status != "completed":  # stopped without concluding: recovery resumes it
        assert job.status in ("running", "failed")
        make_stale(job_id)
        job_run(job_id=job_id)
        job = assert_one_outcome_per_paper(job_id, n)
    assert job.status == "completed" and job.screened == n


def _terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return len(cursor.fetchall())


def test_database_connection_loss_mid_job_ends_terminal_and_web_keeps_answering(api, fake_openai, job_worker):
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend needs PostgreSQL")
    fake_openai.config.latency = 0.05
    n = 200
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    worker = job_worker(job_id, concurrency=4)
    wait_for(lambda: ScreeningResult.objects.filter(job_id=job_id).count() >= 20, process=worker)
    killed = _terminate_other_backends()
    assert killed >= 1
    output, _ = worker.communicate(timeout=60)
    # The web side: our own connection may have been terminated too; the
    # health check on the next request replaces it.
    assert api.get(f"{URL}/{job_id}").status_code == 200
    job = ScreeningJob.objects.get(pk=job_id)
    if job.status not in TERMINAL:
        # The worker gave up without concluding: recovery (stale heartbeat + a new run) finishes it.
        make_stale(job_id)
        job_run(job_id=job_id)
        job.refresh_from_db()
    print(output)
    assert job.status in TERMINAL, (job.status, output)
    if job.status == "failed":
        assert job.error_category and job.error_message
    assert_one_outcome_per_paper(job_id, n)
    assert api.get(f"{URL}/{job_id}/results").status_code == 200
    assert api.get("/healthz").status_code == 200

"""Restart safety with real processes: a worker SIGKILLed mid-job, duplicate delivery, cancel."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from crystallise.jobs.models import JobSecret
from screening.models import ScreeningJob, ScreeningResult
from screening.services import job_run
from tests.factories import CRITERIA, papers
from tests.workers import make_stale, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/screening/jobs"


def assert_complete_once(job_id, n: int) -> None:
    job = ScreeningJob.objects.get(pk=job_id)
    assert job.status == "completed", (job.status, job.error_message)
    positions = list(ScreeningResult.objects.filter(job=job).values_list("position", flat=True))
    assert sorted(positions) == list(range(n))
    assert job.screened == n and job.included + job.excluded + job.errored == n


def test_worker_killed_mid_job_is_resumed_without_duplicates(api, fake_openai, job_worker):
    fake_openai.config.latency = 0.1
    n = 60
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    worker = job_worker(job_id)
    wait_for(lambda: ScreeningResult.objects.filter(job_id=job_id).count() >= 10, process=worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    written = ScreeningResult.objects.filter(job_id=job_id).count()
    assert 10 <= written < n
    calls_before = fake_openai.count
    assert ScreeningJob.objects.get(pk=job_id).status == "running"
    make_stale(job_id)  # the recovery schedule does this after CRYSTALLISE_JOB_STALE_SECONDS
    assert job_run(job_id=job_id) == "completed"
    assert_complete_once(job_id, n)
    # Papers already screened were not billed again: at most the in-flight ones (≤ concurrency) are repeated.
    assert fake_openai.count - calls_before <= (n - written) + 4


def test_resume_with_per_request_key_while_its_encrypted_copy_exists(api, fake_openai, job_worker):
    fake_openai.config.latency = 0.1
    secret = "sk-per-request-resume-777777"
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(30)}, format="json",
                      HTTP_X_OPENAI_API_KEY=secret).json()["id"]
    worker = job_worker(job_id)
    wait_for(lambda: ScreeningResult.objects.filter(job_id=job_id).count() >= 5, process=worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    make_stale(job_id)
    assert job_run(job_id=job_id) == "completed"
    assert set(fake_openai.stats["keys_seen"]) == {secret}  # never switched to the server key
    assert not JobSecret.objects.filter(job_id=job_id).exists()


def test_interrupted_job_whose_key_is_gone_fails_server_restart(api, fake_openai):
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(3)}, format="json",
                      HTTP_X_OPENAI_API_KEY="sk-gone-key-000000").json()["id"]
    ScreeningJob.objects.filter(pk=job_id).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    JobSecret.objects.filter(job_id=job_id).delete()
    job_run(job_id=job_id)
    body = api.get(f"{URL}/{job_id}").json()
    assert body["status"] == "failed" and body["error_category"] == "server_restart"
    assert fake_openai.count == 0


def test_recovery_schedule_requeues_stale_jobs(api, fake_openai, run_queue):
    from crystallise.tasks import recover_jobs

    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(3)}, format="json").json()["id"]
    run_queue()
    ScreeningJob.objects.filter(pk=job_id).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    ScreeningResult.objects.filter(job_id=job_id, position=2).delete()
    ScreeningJob.objects.filter(pk=job_id).update(screened=2)
    assert recover_jobs()["ScreeningJob"]["resumed"] == 1
    run_queue()
    assert_complete_once(job_id, 3)


def test_recovery_schedule_enqueues_a_pending_job_that_was_never_enqueued(api, fake_openai, run_queue):
    """The web process died between saving the job and handing it to the queue: it must not stay pending."""
    from crystallise.auth import Caller, fingerprint
    from crystallise.tasks import recover_jobs
    from screening.services import job_create

    caller = Caller(label="test", fingerprint=fingerprint("test-key"))
    job, _ = job_create(caller=caller, criteria=CRITERIA, papers=papers(3),
                        request_openai_key=None, enqueue=False)
    assert job.heartbeat_at is None
    assert recover_jobs()["ScreeningJob"]["requeued"] == 0  # just created: not orphaned yet
    ScreeningJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=11))
    assert recover_jobs()["ScreeningJob"]["requeued"] == 1
    assert recover_jobs()["ScreeningJob"]["requeued"] == 0  # enqueued now: not again before 10 minutes
    run_queue()
    assert_complete_once(str(job.pk), 3)


def test_duplicate_delivery_gives_one_result_per_paper(api, fake_openai, job_worker):
    fake_openai.config.latency = 0.05
    n = 40
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    first, second = job_worker(job_id), job_worker(job_id)
    outputs = [p.communicate(timeout=60)[0] for p in (first, second)]
    statuses = sorted(line.split()[-1] for out in outputs for line in out.splitlines() if line.startswith("STATUS"))
    assert statuses == ["None", "completed"], outputs
    assert_complete_once(job_id, n)
    assert fake_openai.count == n


def test_cancel_stops_llm_calls_within_seconds(api, fake_openai, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 8
    fake_openai.config.latency = 0.2
    n = 200
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    runner = threading.Thread(target=lambda: (job_run(job_id=job_id), connection.close()))
    runner.start()
    wait_for(lambda: ScreeningResult.objects.filter(job_id=job_id).exists())
    assert api.delete(f"{URL}/{job_id}").json()["status"] == "cancelled"
    cancelled_at, stopped_by = fake_openai.count, time.monotonic() + 3
    runner.join(timeout=10)
    assert time.monotonic() <= stopped_by and not runner.is_alive()
    after_stop = fake_openai.count
    time.sleep(0.5)
    assert fake_openai.count == after_stop  # nothing more once the worker stopped
    assert after_stop - cancelled_at <= 4 * 8  # in flight plus at most one write interval
    assert after_stop < n
    job = ScreeningJob.objects.get(pk=job_id)
    assert job.status == "cancelled"
    # No results were written after the cancel.
    assert ScreeningResult.objects.filter(job=job, created_at__gt=job.finished_at).count() == 0
    # But what the provider billed is counted, the answers discarded after the cancel included.
    assert job.screened < after_stop
    assert job.input_tokens == fake_openai.stats["prompt_tokens"] and job.output_tokens == fake_openai.stats["completion_tokens"]
    assert job.cost_usd > 0


def test_runtime_budget_stop(api, fake_openai, settings):
    # The preflight passes (estimate under the cap), but the provider reports far more
    # tokens than estimated: the runner stops with `budget` instead of overspending.
    fake_openai.config.reasoning_tokens = 200_000
    response = api.post(URL, {"criteria": CRITERIA, "papers": papers(50), "max_estimated_cost_usd": 1.0}, format="json")
    job_id = response.json()["id"]
    settings.CRYSTALLISE_LLM_CONCURRENCY = 2
    assert job_run(job_id=job_id) == "failed"
    body = api.get(f"{URL}/{job_id}").json()
    assert body["error_category"] == "budget"
    assert fake_openai.count < 50
    assert body["cost_usd"] > 0


def test_kickoff_failure_fails_job_at_once_and_sends_its_callback(api, fake_openai, monkeypatch, run_queue, settings):
    """A job whose enqueue fails ends like any other: failed `internal`, key forgotten, callback delivered."""
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from crystallise.jobs import lifecycle
    from crystallise.jobs.models import JobSecret

    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    def broken(job):
        raise RuntimeError("queue down")

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(lifecycle, "enqueue_now", broken)
    try:
        job = api.post(URL, {"criteria": CRITERIA, "papers": papers(2),
                             "callback_url": f"http://127.0.0.1:{server.server_port}/hook"},
                       format="json", HTTP_X_OPENAI_API_KEY="sk-request-key-1234").json()
        body = api.get(f"{URL}/{job['id']}").json()
        assert body["status"] == "failed" and body["error_category"] == "internal"
        assert not JobSecret.objects.filter(job_id=job["id"]).exists()
        run_queue()
    finally:
        server.shutdown()
    assert [(r["id"], r["status"], r["error_category"]) for r in received] == [(job["id"], "failed", "internal")]
    assert api.get(f"{URL}/{job['id']}").json()["callback_status"] == "delivered"


def test_resume_never_switches_to_a_different_server_key(api, fake_openai, settings):
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(3)}, format="json").json()["id"]
    ScreeningJob.objects.filter(pk=job_id).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    settings.CRYSTALLISE_OPENAI_API_KEY = "sk-a-different-server-key"
    job_run(job_id=job_id)
    body = api.get(f"{URL}/{job_id}").json()
    assert body["status"] == "failed" and body["error_category"] == "server_restart"
    assert fake_openai.count == 0


def test_long_preparation_keeps_the_heartbeat_fresh(api, fake_openai, settings):
    """Clustering a huge job outlasts the stale window: the job must not look orphaned meanwhile."""
    from crystallise.jobs.runner import run_job
    from screening.services import ScreeningKind

    settings.CRYSTALLISE_JOB_STALE_SECONDS = 4  # heartbeat every second
    seen = {}

    class SlowPrepare(ScreeningKind):
        def prepare(self, job):
            before = ScreeningJob.objects.get(pk=job.pk).heartbeat_at
            time.sleep(2.5)
            seen["advanced"] = ScreeningJob.objects.get(pk=job.pk).heartbeat_at > before
            super().prepare(job)

    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(3)}, format="json").json()["id"]
    assert run_job(SlowPrepare(), job_id) == "completed"
    assert seen["advanced"]


def test_worker_runs_jobs_at_the_configured_lower_cpu_priority(api, fake_openai, job_worker):
    """CRYSTALLISE_WORKER_NICE: a worker yields the CPU to the web process while it runs a job."""
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(3)}, format="json").json()["id"]
    start = os.nice(0)
    worker = job_worker(job_id, nice=start + 7)
    out, _ = worker.communicate(timeout=60)
    assert "STATUS completed" in out and f"NICE {start + 7}" in out, out
    assert os.nice(0) == start  # the web/test process itself is untouched

"""Worker crashes, duplicate runs and cancel/complete races: each paper ends with exactly one result.

Real worker processes (tests/worker_process.py) are SIGKILLed at seeded random
points of one job and restarted on it, as the recovery schedule would after
the heartbeat goes stale; cancellation races the last batch of a job.
"""

from __future__ import annotations

import collections
import random
import signal
import threading
import time

import pytest
from django.db import connection

from crystallise.jobs import online
from screening.models import Paper, ScreeningJob, ScreeningResult
from screening.services import job_run
from tests.factories import CRITERIA, papers
from tests.workers import make_stale, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/screening/jobs"

KILLS = 12
CONCURRENCY = 4


def _paper_of(request: dict) -> str | None:
    body = request.get("body") or {}
    for message in body.get("messages") or []:
        if message.get("role") == "user" and "Trial " in str(message.get("content")):
            return str(message["content"]).split("Trial ", 1)[1].split()[0]
    return None


def test_worker_sigkilled_a_dozen_times_finishes_once_per_paper(api, fake_openai, job_worker):
    rng = random.Random(20261129)
    latency = 0.2
    fake_openai.config.latency = latency
    n = 240
    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
    kills = 0
    written_at_kill = []
    for attempt in range(KILLS):
        worker = job_worker(job_id, concurrency=CONCURRENCY)
        if attempt % 4 == 3:
            # Some kills land during start-up (Django set-up, claim, clustering).
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            # The rest mid-job: once this run is calling the provider, mid-batch or mid-write.
            calls = fake_openai.count
            wait_for(lambda calls=calls, worker=worker: fake_openai.count > calls or worker.poll() is not None)
            time.sleep(rng.uniform(0.0, 0.8))
        finished = worker.poll() is not None
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        if finished:
            break
        kills += 1
        written_at_kill.append(ScreeningResult.objects.filter(job_id=job_id).count())
        make_stale(job_id)  # what CRYSTALLISE_JOB_STALE_SECONDS + recover_jobs would do
    assert kills >= 10, f"the job finished after {kills} kills; raise n or shorten the delays"
    worker = job_worker(job_id, concurrency=CONCURRENCY)
    output = worker.communicate(timeout=120)[0]
    job = ScreeningJob.objects.get(pk=job_id)
    assert "STATUS completed" in output, (output, job.status, job.error_category, job.error_message)

    job = ScreeningJob.objects.get(pk=job_id)
    assert job.status == "completed"
    positions = list(ScreeningResult.objects.filter(job=job).values_list("position", flat=True))
    assert len(positions) == n == len(set(positions)), "duplicate or missing results"
    assert job.screened == n and job.included + job.excluded + job.errored == n
    assert job.attempts >= 2  # restarts claimed the job again (kills before a claim do not count)

    # Billing: a kill loses the calls in flight (≤ concurrency) and the answers
    # received but not yet written (≤ one flush interval's worth).
    per_kill = CONCURRENCY + int(CONCURRENCY * online.FLUSH_SECONDS / latency) + 1
    assert fake_openai.count <= n + kills * per_kill, (fake_openai.count, n, kills)
    repeats = collections.Counter(filter(None, map(_paper_of, fake_openai.requests)))
    billed_twice = sum(c - 1 for c in repeats.values() if c > 1)
    assert billed_twice == fake_openai.count - n
    print(f"kills={kills} requests={fake_openai.count} papers={n} billed_twice={billed_twice} "
          f"written_at_kill={written_at_kill}")


def test_cancel_racing_completion_ends_in_exactly_one_terminal_state(api, fake_openai, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 4
    fake_openai.config.latency = 0.01
    rng = random.Random(7)
    outcomes = collections.Counter()
    for _ in range(10):
        n = 24
        job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(n)}, format="json").json()["id"]
        ran: list = []
        def run(job_id=job_id, ran=ran) -> None:
            ran.append(job_run(job_id=job_id))
            connection.close()

        runner_thread = threading.Thread(target=run)
        runner_thread.start()
        # The job takes ~0.1-0.3 s; cancel somewhere around its end.
        time.sleep(rng.uniform(0.0, 0.35))
        response = api.delete(f"{URL}/{job_id}")
        at_cancel = ScreeningResult.objects.filter(job_id=job_id).count()
        runner_thread.join(timeout=20)
        assert not runner_thread.is_alive()
        if response.status_code == 204:
            # Finished first: DELETE removed the job and everything it owned.
            outcomes["deleted"] += 1
            assert ran == ["completed"]
            assert not ScreeningJob.objects.filter(pk=job_id).exists()
            assert not Paper.objects.filter(job_id=job_id).exists()
            assert not ScreeningResult.objects.filter(job_id=job_id).exists()
            continue
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "cancelled"
        outcomes["cancelled"] += 1
        assert ran == [None]  # the run lost its lease: it concluded nothing
        job = ScreeningJob.objects.get(pk=job_id)
        assert job.status == "cancelled" and job.finished_at is not None and job.lease is None
        results = ScreeningResult.objects.filter(job=job)
        assert job.screened == results.count()
        assert job.errored == results.filter(decision__isnull=True).count()
        assert job.included == results.filter(decision="include").count()
        # Nothing was written once the cancel had taken effect (the worker's next write found no lease).
        assert results.count() == at_cancel, "a result was written after the cancel"
        # A second DELETE removes the cancelled job.
        assert api.delete(f"{URL}/{job_id}").status_code == 204
    assert sum(outcomes.values()) == 10
    print(dict(outcomes))




def test_cancel_waiting_on_a_batch_write_is_stamped_after_it(api, fake_openai):
    import uuid

    from crystallise.jobs.lifecycle import cancel as job_cancel
    from crystallise.jobs.lifecycle import claim

    job_id = api.post(URL, {"criteria": CRITERIA, "papers": papers(3)}, format="json").json()["id"]
    token = uuid.uuid4()
    assert claim(ScreeningJob, job_id, token)
    locked, release = threading.Event(), threading.Event()

    def batch_write() -> None:
        # What the runner's flush does: lock the job row by updating it under the lease, write results.
        from django.db import transaction

        with transaction.atomic():
            assert ScreeningJob.objects.filter(pk=job_id, lease=token, status="running").update(screened=1)
            locked.set()
            release.wait(5)
            time.sleep(0.2)
            paper = Paper.objects.get(job_id=job_id, position=0)
            ScreeningResult.objects.create(job_id=job_id, paper=paper, position=0, decision="include", cluster=0)
        connection.close()

    writer = threading.Thread(target=batch_write)
    writer.start()
    assert locked.wait(5)
    release.set()
    job = job_cancel(job=ScreeningJob.objects.get(pk=job_id))  # waits for the batch's row lock
    writer.join(10)
    assert job.status == "cancelled"
    assert not ScreeningResult.objects.filter(job=job, created_at__gt=job.finished_at).exists()

"""Scaling out: two django-q2 clusters (standing for two hosts) on one database share one provider key's limit."""

from __future__ import annotations

import bisect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from crystallise.ratelimit.models import RateLimitLease
from screening.models import ScreeningJob, ScreeningResult
from tests.conftest import SERVER_OPENAI_KEY
from tests.factories import paper

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"),
                       reason="several processes writing at once need PostgreSQL"),
]

ROOT = Path(__file__).resolve().parent.parent
RPM = 3000  # 50 calls/s for the four jobs together
PAPERS = 150


def database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Cluster:
    """`manage.py qcluster` with production settings, one worker process, its log lines collected."""

    def __init__(self, fake) -> None:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "crystallise_site.settings.base", "DATABASE_URL": database_url(),
               # The test's own secret: tasks are signed with it, and the clusters must read them.
               "DJANGO_SECRET_KEY": settings.SECRET_KEY, "DJANGO_DEBUG": "false",
               "CRYSTALLISE_OPENAI_BASE_URL": fake.base_url, "CRYSTALLISE_OPENAI_API_KEY": SERVER_OPENAI_KEY,
               "CRYSTALLISE_WORKERS": "1", "CRYSTALLISE_WORKER_NICE": "0", "CRYSTALLISE_LOG_LEVEL": "INFO"}
        self.process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    def name(self) -> str | None:
        found = [m.group(1) for line in list(self.lines) if (m := re.search(r"Q Cluster (\S+) \[.*\] running", line))]
        return found[0] if found else None

    def jobs_run(self) -> int:
        return sum("processing screening.tasks.run_screening_job" in line for line in list(self.lines))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5)


def wait_for(predicate, timeout: float, what: str, clusters) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or any(c.process.poll() is not None for c in clusters):
            logs = "\n\n".join("".join(c.lines[-40:]) for c in clusters)
            raise AssertionError(f"{what} not reached\n{logs}")
        time.sleep(0.1)


def test_two_clusters_share_one_keys_limit_and_run_every_job_once(api, fake_openai):
    fake_openai.config.update({"rpm": RPM, "latency": 0.2, "log_size": 20_000})
    fake_openai.reset()
    clusters = [Cluster(fake_openai) for _ in range(2)]
    try:
        wait_for(lambda: all(c.name() for c in clusters), 60, "both clusters running", clusters)
        job_ids = []
        for i in range(4):
            papers = [paper(f"j{i}p{k}", f"Trial {k} of migraine treatment",
                            "A randomized trial of migraine treatment in adults.") for k in range(PAPERS)]
            criteria = {"inclusion": ["randomized trial", f"migraine treatment {i}"], "exclusion": ["children"]}
            response = api.post("/v1/screening/jobs", {"criteria": criteria, "papers": papers}, format="json")
            assert response.status_code == 202, response.content
            job_ids.append(response.json()["id"])
        wait_for(lambda: ScreeningJob.objects.filter(pk__in=job_ids, status="completed").count() == 4, 120,
                 "every job completed", clusters)
    finally:
        for cluster in clusters:
            cluster.stop()

    names = [c.name() for c in clusters]
    assert names[0] != names[1]
    # Each cluster claims what its worker can run plus one task ahead: with one worker each, neither can
    # take all four.
    assert all(c.jobs_run() >= 1 for c in clusters), [c.jobs_run() for c in clusters]
    for job in ScreeningJob.objects.filter(pk__in=job_ids):
        positions = list(ScreeningResult.objects.filter(job=job).values_list("position", flat=True))
        assert sorted(positions) == list(range(PAPERS)), "a paper screened twice or not at all"
        assert job.errored == 0
    assert sum(e["status"] == 200 for e in fake_openai.requests) == 4 * PAPERS
    # Never above the limit over any 10 s: every request sent counts, refused ones too (the provider
    # refuses what is over, so its admissions alone could not show it).
    sent = sorted(e["t"] for e in fake_openai.requests)
    busiest = max(bisect.bisect_left(sent, t + 10) - i for i, t in enumerate(sent))
    assert busiest <= 10 * RPM / 60, busiest
    assert fake_openai.stats["status"].get("429", 0) <= 0.01 * fake_openai.count
    assert not RateLimitLease.objects.exists()  # every job gave its lease back

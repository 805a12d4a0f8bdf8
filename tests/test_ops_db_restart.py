"""The database goes away mid-job and comes back: a PostgreSQL server of the test's own, a real gunicorn and a real
django-q2 cluster pointed at it.

During an outage the web answers /healthz with 503 and the API with a 503 in the error shape; once the server is
back both recover without a restart, the worker keeps its processes (no crash loop) and the job completes with one
result per paper. Also the disk-full case, on a small tmpfs (needs root to mount it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import SERVER_OPENAI_KEY
from tests.ops_services import (
    ROOT,
    PrivateServer,
    free_port,
    http,
    postgres_available,
    service_env,
    start_gunicorn,
    start_qcluster,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.skipif(postgres_available() is not None, reason=str(postgres_available())),
              pytest.mark.timeout(600)]

KEY = {"X-API-Key": "ops-restart-key"}
CRITERIA = {"inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["children"]}
OUTAGE_SECONDS = 10


def papers(n: int) -> list[dict]:
    return [{"id": f"p{i}", "title": f"Trial {i} of migraine treatment",
             "abstract": "A randomized trial of migraine treatment in adults."} for i in range(n)]


class Stack:
    """A private PostgreSQL server, gunicorn and a qcluster, all pointed at one fresh database."""

    def __init__(self, fake_base_url: str, data_dir: Path | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="crys-ops-"))
        self.server = PrivateServer(data_dir)
        self.server.start()
        self.server.psql("CREATE DATABASE crys")
        self.env = service_env(f"{self.server.url_base}/crys", fake_base_url, SERVER_OPENAI_KEY,
                               CRYSTALLISE_LLM_CONCURRENCY="4")
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env,
                       check=True, capture_output=True, timeout=300)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web = start_gunicorn(self.env, self.port, self.tmp / "web.log")
        self.worker = start_qcluster(self.env, self.tmp / "worker.log")

    def close(self) -> None:
        stop(self.web)
        stop(self.worker)
        self.server.destroy()
        shutil.rmtree(self.tmp, ignore_errors=True)  # the logs (failing assertions quote what they need)

    def job(self, job_id: str) -> dict:
        status, _, body = http("GET", f"{self.url}/v1/screening/jobs/{job_id}", headers=KEY)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def submit(self, n: int) -> str:
        status, _, body = http("POST", f"{self.url}/v1/screening/jobs", {"criteria": CRITERIA, "papers": papers(n)},
                               headers=KEY, timeout=60)
        assert status == 202, (status, body[:300])
        return json.loads(body)["id"]

    def result_positions(self, job_id: str) -> list[int]:
        out = self.server.psql(f"SELECT position FROM screening_screeningresult WHERE job_id = '{job_id.replace('-', '')}'"
                               " ORDER BY position", db="crys")
        return [int(line) for line in out.split()]

    def worker_processes(self) -> set[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.worker.pid)], capture_output=True, text=True)
        return {int(pid) for pid in out.stdout.split()}

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def fake(_fake_server):
    from tests.fake_openai import FakeConfig

    _fake_server.config = FakeConfig(latency=0.25)
    _fake_server.reset()
    yield _fake_server
    _fake_server.config = FakeConfig()


def assert_outage_answers(stack: Stack, job_id: str, seconds: float) -> dict[str, int]:
    """For `seconds`: /healthz is 503, the API is a 503 in the error shape (never 500, never HTML)."""
    seen = {"healthz": 0, "api": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, _, body = http("GET", f"{stack.url}/healthz")
        assert status == 503, (status, body[:300])
        assert json.loads(body)["database"] == "unavailable"
        seen["healthz"] += 1
        for method, path, payload in (("GET", f"/v1/screening/jobs/{job_id}", None),
                                      ("POST", "/v1/screening/jobs", {"criteria": CRITERIA, "papers": papers(1)})):
            status, headers, body = http(method, stack.url + path, payload, headers=KEY)
            assert status == 503, (method, status, body[:300])
            error = json.loads(body)
            assert error["error_category"] == "internal" and "database" in error["detail"]
            assert headers.get("Retry-After") == "5"
            seen["api"] += 1
        time.sleep(0.5)
    return seen


def test_database_restarts_mid_job_fast_then_immediate(fake):
    n = 400
    stack = Stack(fake.base_url)
    try:
        wait_until(lambda: json.loads(http("GET", f"{stack.url}/healthz")[2])["workers"] > 0, 30, "a live worker")
        web_pid = stack.web.pid
        job_id = stack.submit(n)
        for mode, when in (("fast", 60), ("immediate", 200)):
            wait_until(lambda when=when: stack.job(job_id)["progress"]["screened"] >= when, 90, f"{when} papers")
            stack.server.stop(mode)
            seen = assert_outage_answers(stack, job_id, OUTAGE_SECONDS)
            assert seen["healthz"] >= 5
            stack.server.start()
            restarted_at = time.monotonic()
            # Back without restarting anything: the next requests reconnect.
            wait_until(lambda: http("GET", f"{stack.url}/healthz")[0] == 200, 15, "/healthz to recover")
            assert stack.job(job_id)["status"] in ("running", "completed")
        wait_until(lambda: stack.job(job_id)["status"] not in ("pending", "running"), 180, "the job to end")
        job = stack.job(job_id)
        assert job["status"] == "completed", (job["status"], job["error_message"], stack.log("worker")[-3000:])
        progress = job["progress"]
        assert progress["screened"] == n == progress["included"] + progress["excluded"] + progress["errored"]
        assert progress["errored"] == 0
        assert stack.result_positions(job_id) == list(range(n))  # every paper once
        # Nothing was restarted from outside: the same gunicorn and cluster served before, during and after.
        assert stack.web.poll() is None and stack.web.pid == web_pid
        assert stack.worker.poll() is None
        # Inside the cluster, django-q2's pusher and monitor exit on a lost connection and its sentinel starts
        # them again: a few times per outage, and never once the database is back (no crash loop).
        # (A pusher that failed just before the restart sleeps 10 s before it exits: count after that.)
        time.sleep(max(0.0, restarted_at + 12 - time.monotonic()))
        respawns = stack.log("worker").count("reincarnated")
        assert respawns <= 3 * 2, stack.log("worker")[-3000:]
        time.sleep(5)
        assert stack.log("worker").count("reincarnated") == respawns
        status, _, _ = http("POST", f"{stack.url}/v1/screening/jobs", {"criteria": CRITERIA, "papers": papers(2)},
                            headers=KEY)
        assert status == 202
    finally:
        stack.close()


# --- disk full ---------------------------------------------------------------------


def mount_tmpfs(size_mb: int) -> Path | None:
    if os.geteuid() != 0:
        return None
    path = Path(tempfile.mkdtemp(prefix="crys-tmpfs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode:
        path.rmdir()
        return None
    return path


def test_database_disk_full_mid_job_then_space_freed(fake):
    mount = mount_tmpfs(160)
    if mount is None:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount permission)")
    filler = mount / "filler"
    stack = None
    try:
        os.chown(mount, int(subprocess.check_output(["id", "-u", "postgres"])), -1)
        stack = Stack(fake.base_url, data_dir=mount / "data")
        n = 300
        job_id = stack.submit(n)
        wait_until(lambda: stack.job(job_id)["progress"]["screened"] >= 40, 90, "40 papers")
        # Fill the disk: whatever the server writes next fails with "No space left on device".
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "status=none"], capture_output=True)
        screened_when_full = stack.job(job_id)["progress"]["screened"]
        time.sleep(OUTAGE_SECONDS)
        status, _, body = http("POST", f"{stack.url}/v1/screening/jobs",
                               {"criteria": CRITERIA, "papers": papers(50)}, headers=KEY)
        assert status in (202, 503), (status, body[:300])  # a write may fit in a page already allocated
        if status == 503:
            assert json.loads(body)["error_category"] == "internal"
        healthz = http("GET", f"{stack.url}/healthz")[0]
        filler.unlink()
        stopped = stack.server._run([str(stack.server.bin / "pg_ctl"), "-D", str(stack.server.data), "status"],
                                    check=False).returncode != 0
        if stopped:
            stack.server.start()  # the server stopped itself (a WAL write failed): an operator starts it again
        print(f"disk full: screened {screened_when_full} when full; after {OUTAGE_SECONDS} s: POST {status}, "
              f"/healthz {healthz}, server stopped itself: {stopped}")
        wait_until(lambda: http("GET", f"{stack.url}/healthz")[0] == 200, 30, "/healthz to recover")
        wait_until(lambda: stack.job(job_id)["status"] not in ("pending", "running"), 240, "the job to end")
        job = stack.job(job_id)
        assert job["status"] == "completed", (job["status"], job["error_message"])
        assert stack.result_positions(job_id) == list(range(n))
        assert job["progress"]["screened"] == n
        assert stack.web.poll() is None and stack.worker.poll() is None
    finally:
        if stack is not None:
            stack.close()
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        mount.rmdir()

"""Real worker processes for tests, on the test database (or another one).

- `start_worker`: `tests/worker_process.py` runs one screening job with the service's own code, as a
  django-q2 worker does with the job's task, against the fake OpenAI server.
- `Cluster`: a real `manage.py qcluster`, its output collected line by line.
- `wait_for`: polls a condition, and gives up at once (with the process's output) when the process
  that should bring it about has exited.

The fixtures `job_worker` and `qcluster` in tests/conftest.py start them and make sure none outlives
its test. The processes see the test's rows only when the test commits them:
`pytest.mark.django_db(transaction=True)`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.db import connection
from django.utils import timezone

ROOT = Path(__file__).resolve().parent.parent
TEST_SETTINGS = "crystallise_site.settings.test"


def database_url(settings_dict: dict | None = None) -> str:
    """DATABASE_URL of a connection's database (the test database by default), for a child process."""
    s = settings_dict or connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def process_env(*, database: str | None = None, fake=None, server_key: str | None = None, **extra) -> dict[str, str]:
    """The environment of a child process: test settings, the test database, and, when `fake` is given,
    the fake OpenAI server as the provider with `server_key` (the `fake_openai` fixture's by default) as
    the server's key (crystallise_site/settings/test.py reads them). `extra`: more variables."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": TEST_SETTINGS, "DATABASE_URL": database or database_url()}
    if fake is not None:
        from tests.conftest import SERVER_OPENAI_KEY

        env.update(CRYSTALLISE_TEST_OPENAI_BASE_URL=fake.base_url,
                   CRYSTALLISE_TEST_OPENAI_API_KEY=SERVER_OPENAI_KEY if server_key is None else server_key)
    env.update({name: str(value) for name, value in extra.items()})
    return env


def output_of(process: subprocess.Popen) -> str:
    """What an exited process printed, when its output was piped and not read yet."""
    if process.stdout is None or process.stdout.closed:
        return ""
    try:
        return process.stdout.read() or ""
    except ValueError:  # closed meanwhile
        return ""


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, *, process: subprocess.Popen | None = None,
             what: str = "condition", output: Callable[[], str] | None = None) -> None:
    """Return once `predicate()` is true; fail after `timeout` seconds, or as soon as `process` has exited
    (with what it printed: `output()`, by default its piped output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            if predicate():  # brought about just before exiting
                return
            raise AssertionError(f"{what} not reached: the process exited with {process.returncode} first.\n"
                                 f"{(output or (lambda: output_of(process)))()}")
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout} s")


def make_stale(job_id, model=None) -> None:
    """What CRYSTALLISE_JOB_STALE_SECONDS without a heartbeat does: the job looks orphaned to recovery."""
    if model is None:
        from screening.models import ScreeningJob as model
    model.objects.filter(pk=job_id).update(heartbeat_at=timezone.now() - timedelta(hours=1))


def start_worker(job_id, fake, concurrency: int = 4, nice: int = 0, stale_seconds: int = 60) -> subprocess.Popen:
    """A process that runs screening job `job_id` to its end, then prints `STATUS <outcome>` and `NICE <niceness>`."""
    env = process_env(fake=fake, CONCURRENCY=concurrency, WORKER_NICE=nice, STALE_SECONDS=stale_seconds)
    return subprocess.Popen([sys.executable, "-m", "tests.worker_process", str(job_id)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


class Cluster:
    """A `manage.py qcluster` process (a django-q2 cluster: sentinel, workers, pusher, monitor)."""

    def __init__(self, env: dict[str, str]):
        # A session of its own, so that stopping can reach every process of the cluster if it must.
        self.process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def error_lines(self) -> list[str]:
        """Lines logged at ERROR or CRITICAL, and tracebacks."""
        return [line for line in self.lines
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        found: list[str] = []

        def seen() -> bool:
            found.extend(line for line in self.lines if text in line)
            return bool(found)

        wait_for(seen, timeout, process=self.process, what=f"qcluster printing {text!r}", output=lambda: self.output)
        return found[0]

    def wait_until_running(self, timeout: float = 30.0) -> None:
        self.wait_for_line("] running.", timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """Stop as a service manager does: SIGTERM to the cluster's main process, which stops its children
        (a signal to all of them at once kills the sentinel first and leaves the main process waiting on it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # whatever did not stop in time, and any process the cluster left behind
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL to every process of the cluster."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # none left
            pass
        self.process.wait()

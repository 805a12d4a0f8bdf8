"""Real service processes for the operations tests: a django-q2 cluster, gunicorn, and a PostgreSQL server of
the test's own (initdb into a temporary directory, pg_ctl on a free port), all with production settings."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdef"  # as crystallise_site.settings.test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(database_url: str, fake_base_url: str, server_key: str, **extra: str) -> dict[str, str]:
    """Production settings (DEBUG off) pointed at `database_url` and the fake provider."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CRYSTALLISE_", "OPENAI_"))}
    env.update(DJANGO_SETTINGS_MODULE="crystallise_site.settings.base", DJANGO_SECRET_KEY=SECRET_KEY,
               DJANGO_DEBUG="false", DJANGO_SECURE_COOKIES="false", DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
               DATABASE_URL=database_url, CRYSTALLISE_OPENAI_BASE_URL=fake_base_url,
               CRYSTALLISE_OPENAI_API_KEY=server_key, CRYSTALLISE_WORKER_NICE="0", CRYSTALLISE_WORKERS="1",
               CRYSTALLISE_LOG_LEVEL="INFO")
    env.update(extra)
    return env


def start_qcluster(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115 - owned by the process's lifetime
    return subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def start_gunicorn(env: dict[str, str], port: int, log_path: Path, workers: int = 2) -> subprocess.Popen:
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "crystallise_site.wsgi", "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--config", "gunicorn.conf.py"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/healthz")[0] in (200, 503), 30, "gunicorn to answer")
    return proc


def stop(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """SIGTERM to the process group the test started, then SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, dict, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, {}, b""


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# --- a PostgreSQL server of the test's own --------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def as_postgres(args: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as the postgres OS user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def postgres_available() -> str | None:
    """None if a private server can be run here, else why not."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    if shutil.which("psql") is None:
        return "no psql client"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
        return "running as root without runuser or a postgres OS user"
    return None


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


class PrivateServer:
    """initdb into `data_dir` (created, owned by the server's OS user), started and stopped with pg_ctl."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.bin = postgres_bin()
        self.base = Path(tempfile.mkdtemp(prefix="crys-pg-"))
        self.data = data_dir or self.base / "data"
        self.port = free_port()
        self.log = self.base / "server.log"
        self.socket_dir = self.base / "sock"
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            uid = _uid("postgres")
            for path in (self.base, self.socket_dir, self.data.parent):
                os.chown(path, uid, -1)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--no-sync", "--no-instructions"])

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(as_postgres(args), capture_output=True, text=True, check=check, timeout=120, cwd=self.base)

    @property
    def url_base(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=60 -c shared_buffers=32MB")
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                   "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], check=False)

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(["psql", f"{self.url_base}/{db}", "-qAtc", sql], capture_output=True, text=True,
                             timeout=60)
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

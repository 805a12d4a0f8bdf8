"""CRYSTALLISE_LOG_FORMAT=json: one JSON object per line, each line of a job carrying its id, secrets redacted."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from crystallise.jsonlog import JobContextFilter, JsonFormatter, job_context
from crystallise.logs import RedactSecretsFilter
from tests.ops_services import ROOT
from tests.test_settings import manage

JOB = "0b7e3c7e-1d2a-4c55-9a7e-3f1f2b8e9d10"


class Lines(logging.Handler):
    """The console handler's pipeline (redact, job, JSON), collected."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RedactSecretsFilter())
        self.addFilter(JobContextFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines():
    handler = Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def entries(lines: list[str]) -> list[dict]:
    for line in lines:
        assert "\n" not in line
    return [json.loads(line) for line in lines]


def test_each_line_is_one_json_object_with_the_jobs_id(lines):
    log = logging.getLogger("crystallise.test")
    log.info("before the job")
    with job_context(JOB):
        log.warning("inside the job: %d papers", 3)
    [before, inside] = entries(lines)
    assert "job_id" not in before
    assert inside["job_id"] == JOB and inside["message"] == "inside the job: 3 papers"
    assert inside["level"] == "WARNING" and inside["logger"] == "crystallise.test"
    assert inside["time"].endswith("Z") and inside["process"] == os.getpid()


def test_a_traceback_stays_on_one_line_and_is_redacted(lines):
    with job_context(JOB):
        try:
            raise RuntimeError("provider said no to sk-proj-abcdefghijklmnop and cry_ABCDEFGHIJKL")
        except RuntimeError:
            logging.getLogger("crystallise.test").exception("call failed with key sk-live-1234567890")
    [entry] = entries(lines)
    assert entry["job_id"] == JOB
    assert "Traceback" in entry["exception"] and "RuntimeError" in entry["exception"]
    raw = lines[0]
    assert "sk-proj" not in raw and "cry_ABCD" not in raw and "sk-live" not in raw and "[redacted]" in raw


def test_lines_of_the_runners_job_threads_carry_the_job(lines):
    # The runner's database and heartbeat threads do not inherit the context variable.
    for name in (f"job-{JOB}_0", f"heartbeat-{JOB}"):
        thread = threading.Thread(target=lambda: logging.getLogger("crystallise.jobs").warning("write failed"),
                                  name=name)
        thread.start()
        thread.join()
    assert [e["job_id"] for e in entries(lines)] == [JOB, JOB]


@pytest.mark.django_db(transaction=True)
def test_every_line_logged_while_a_queued_job_runs_carries_its_id(api, fake_openai, run_queue, lines, settings):
    from screening.tasks import run_screening_job

    fake_openai.config.script = ["401"]  # the provider rejects the key: the runner logs why the job stops
    settings.CRYSTALLISE_LLM_CONCURRENCY = 1
    job_id = api.post("/v1/screening/jobs", {"criteria": {"inclusion": ["trial"]},
                                             "papers": [{"id": "p1", "title": "A trial", "abstract": "A trial."}]},
                      format="json").json()["id"]
    lines.clear()
    run_queue()
    run_screening_job(job_id)  # a duplicate delivery: "not claimed", logged inside the job's context too
    logged = entries(lines)
    assert logged, "the job's run logged nothing"
    assert {e.get("job_id") for e in logged} == {job_id}


def test_the_setting_selects_the_json_formatter_and_refuses_others():
    code = ("import logging, django; django.setup(); "
            "logging.getLogger('crystallise.check').warning('hello with sk-secret-0123456789')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CRYSTALLISE_"))}
    env.update(DJANGO_SETTINGS_MODULE="crystallise_site.settings.base", DJANGO_SECRET_KEY="s" * 50,
               DATABASE_URL="sqlite:////tmp/crystallise-settings-test.sqlite3", CRYSTALLISE_LOG_FORMAT="JSON")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    [line] = [line for line in out.stderr.splitlines() if line.strip()]
    entry = json.loads(line)
    assert entry["message"] == "hello with [redacted]" and entry["logger"] == "crystallise.check"
    bad = manage("check", CRYSTALLISE_LOG_FORMAT="yaml")
    assert bad.returncode == 1 and "CRYSTALLISE_LOG_FORMAT must be text or json" in bad.stderr


def test_text_stays_the_default_format():
    from django.conf import settings

    assert settings.CRYSTALLISE_LOG_FORMAT == "text"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "plain"


def test_gunicorn_and_the_service_write_only_json_lines(tmp_path):
    from tests.ops_services import free_port, http, service_env, start_gunicorn, stop

    env = service_env(f"sqlite:///{tmp_path / 'db.sqlite3'}", "http://127.0.0.1:9/v1", "", CRYSTALLISE_LOG_FORMAT="json",
                      PYTHONWARNINGS="ignore")
    port, log = free_port(), tmp_path / "web.log"
    web = start_gunicorn(env, port, log, workers=1)
    try:
        assert http("GET", f"http://127.0.0.1:{port}/no-such-page?key=sk-in-a-url-0123456789")[0] == 404
    finally:
        stop(web)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    loggers = {entry["logger"] for entry in parsed}
    assert {"gunicorn.error", "django.request"} <= loggers
    assert "sk-in-a-url" not in log.read_text()

"""Configuration from the environment: a value that cannot be what it names stops the process
with one line naming the variable, never a silent default or a failure at the first request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BAD = {
    "CRYSTALLISE_FERNET_KEY": "not-a-fernet-key",
    "CRYSTALLISE_LLM_TIMEOUT": "abc",
    "CRYSTALLISE_LLM_BACKOFF": "nan",
    "CRYSTALLISE_LLM_MAX_ATTEMPTS": "0",
    "CRYSTALLISE_LLM_CONCURRENCY": "x5y0",
    "CRYSTALLISE_WORKERS": "-2",
    "CRYSTALLISE_TASK_TIMEOUT": "0",
    "CRYSTALLISE_JOB_STALE_SECONDS": "-60",
    "DJANGO_SECURE_COOKIES": "ture",
    "DJANGO_DEBUG": "maybe",
    "CRYSTALLISE_CALLBACK_ALLOW_PRIVATE": "sure",
    "CRYSTALLISE_CALLBACK_BACKOFF": "-1",
    "DJANGO_SECURE_HSTS_SECONDS": "-10",
    "CRYSTALLISE_LOG_LEVEL": "verbose",
    "DATABASE_URL": "garbage",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CRYSTALLISE_"))}
    clean.update({"DJANGO_SETTINGS_MODULE": "crystallise_site.settings.base", "DJANGO_SECRET_KEY": "s" * 50,
                  "DATABASE_URL": "sqlite:////tmp/crystallise-settings-test.sqlite3", **env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_refuses_to_start_in_one_line_naming_the_variable(name):
    result = manage("check", **{name: BAD[name]})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Configuration error: {name} "), result.stderr


def test_good_values_in_any_usual_spelling_start():
    result = manage("shell", "-c", "from django.conf import settings as s; print(s.DEBUG, s.CRYSTALLISE_LLM_TIMEOUT, "
                    "s.SESSION_COOKIE_SECURE, s.LOG_LEVEL, s.Q_CLUSTER['workers'], s.Q_CLUSTER['retry'])",
                    DJANGO_DEBUG="TRUE", CRYSTALLISE_LLM_TIMEOUT=" 1e3 ", DJANGO_SECURE_COOKIES="off",
                    CRYSTALLISE_LOG_LEVEL="warning", CRYSTALLISE_WORKERS="4", CRYSTALLISE_TASK_TIMEOUT="3600",
                    CRYSTALLISE_FERNET_KEY="ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["True", "1000.0", "False", "WARNING", "4", "4200"]


def test_gunicorn_refuses_a_bad_value_in_one_line_before_starting_workers():
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CRYSTALLISE_"))}
    clean.update({"DJANGO_SECRET_KEY": "s" * 50, "CRYSTALLISE_LLM_BACKEND": "claude"})
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run([str(gunicorn), "crystallise_site.wsgi", "--bind", "127.0.0.1:0"], cwd=ROOT, env=clean,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "Configuration error: CRYSTALLISE_LLM_BACKEND must be one of 'openai', 'mock'."
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr

"""Concurrent submissions against a live server over real HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from django.db import connection

from screening.models import Paper, ScreeningJob
from tests.factories import CRITERIA, papers

pytestmark = pytest.mark.django_db(transaction=True)

CALLERS = 20


def _post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_concurrent_posts_for_one_project_admit_exactly_one(live_server, settings):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers with a file lock; the race is meaningful on PostgreSQL")
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    url = f"{live_server.url}/v1/screening/jobs"
    body = json.dumps({"project_id": "race-1", "criteria": CRITERIA, "papers": papers(50)}).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": "race-key"}
    barrier = threading.Barrier(CALLERS)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        answer = _post(url, body, headers)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] + [409] * (CALLERS - 1), [a for a in answers if a[0] not in (202, 409)]
    winner = next(b for s, b in answers if s == 202)
    for status, answer in answers:
        if status == 409:
            assert answer["error_category"] == "conflict"
            assert answer["active_job_id"] == winner["id"]
            assert winner["id"] in answer["detail"]
    # Losers stored nothing: one job, and only its papers.
    assert ScreeningJob.objects.count() == 1
    assert Paper.objects.count() == 50
    # A different project of the same key is not blocked.
    other = json.dumps({"project_id": "race-2", "criteria": CRITERIA, "papers": papers(2)}).encode()
    assert _post(url, other, headers)[0] == 202

"""A screening job after submission: cancel and delete, visibility, listing, result exports, and the `screen`
command that runs the same pipeline from the command line."""

from __future__ import annotations

import csv
import io
import json

import pytest

from screening.models import ScreeningJob, ScreeningResult
from tests.factories import FIXTURES
from tests.screening_support import CRITERIA, URL, finished, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_cancel_then_delete(api, fake_openai, run_queue):
    job = submit(api).json()
    response = api.delete(f"{URL}/{job['id']}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run_queue()
    assert fake_openai.count == 0
    assert api.delete(f"{URL}/{job['id']}").status_code == 204
    assert api.get(f"{URL}/{job['id']}").status_code == 404
    assert not ScreeningResult.objects.exists()


def test_other_callers_jobs_are_invisible(api, fake_openai):
    from rest_framework.test import APIClient

    job = submit(api).json()
    other = APIClient()
    other.credentials(HTTP_X_API_KEY="someone-else")
    assert other.get(f"{URL}/{job['id']}").status_code == 404
    assert other.delete(f"{URL}/{job['id']}").status_code == 404
    assert other.get(URL).json()["results"] == []


def test_list_filters_and_paginates(api, fake_openai):
    for i in range(3):
        submit(api, project_id=f"L{i}")
    body = api.get(URL, {"page_size": 2}).json()
    assert len(body["results"]) == 2 and body["next"]
    assert [j["project_id"] for j in api.get(URL, {"project_id": "L1"}).json()["results"]] == ["L1"]
    assert api.get(URL, {"status": "bogus"}).status_code == 400


def test_exports(api, fake_openai, run_queue):
    job = submit(api).json()
    finished(api, run_queue, job["id"])
    response = api.get(f"{URL}/{job['id']}/results", {"format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["paper_id"] for r in rows] == ["p1", "p2", "p3", "p4"]
    assert set(rows[0]) >= {"paper_id", "title", "decision", "score", "needs_review", "confidence", "cluster",
                            "reasoning", "error", "inclusion_0", "inclusion_1", "exclusion_0"}
    ris = b"".join(api.get(f"{URL}/{job['id']}/results", {"format": "ris"}).streaming_content).decode()
    import rispy

    entries = rispy.loads(ris)
    assert entries[0]["id"] == "p1" and "crystallise:include" in entries[0]["keywords"]
    jsonl = b"".join(api.get(f"{URL}/{job['id']}/results", {"format": "jsonl"}).streaming_content).decode()
    assert [json.loads(line)["paper_id"] for line in jsonl.splitlines()] == ["p1", "p2", "p3", "p4"]
    page = api.get(f"{URL}/{job['id']}/results", {"decision": "include"}).json()
    assert [r["paper_id"] for r in page["results"]] == ["p1"]


def test_screen_command_runs_the_pipeline(fake_openai, tmp_path, capsys):
    from django.core.management import call_command

    criteria = tmp_path / "criteria.json"
    criteria.write_text(json.dumps(CRITERIA))
    out = tmp_path / "out.csv"
    call_command("screen", str(FIXTURES / "papers.csv"), "--criteria", str(criteria), "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert rows and all(r["decision"] in ("include", "exclude") for r in rows)
    assert "completed" in capsys.readouterr().out
    assert fake_openai.count == len(rows)


@pytest.mark.parametrize(("extra", "message"), [
    (["--threshold", "2"], "threshold"),
    (["--threshold", "nan"], "threshold"),
    (["--max-cost", "-1"], "max_estimated_cost_usd"),
    (["--concurrency", "0"], "concurrency"),
    (["--out", "/nonexistent-dir/out.csv"], "no directory"),
])
def test_screen_command_refuses_what_the_api_refuses_before_calling_anyone(fake_openai, tmp_path, extra, message):
    from django.core.management import CommandError, call_command

    criteria = tmp_path / "criteria.json"
    criteria.write_text(json.dumps(CRITERIA))
    with pytest.raises((CommandError, SystemExit)) as info:
        call_command("screen", str(FIXTURES / "papers.csv"), "--criteria", str(criteria), *extra)
    if isinstance(info.value, CommandError):
        assert message in str(info.value)
    assert not ScreeningJob.objects.exists() and fake_openai.count == 0


def test_command_line_jobs_have_one_owner_and_label(fake_openai, tmp_path):
    from django.core.management import call_command

    from indexer.models import IndexJob

    criteria = tmp_path / "criteria.json"
    criteria.write_text(json.dumps(CRITERIA))
    call_command("screen", str(FIXTURES / "papers.csv"), "--criteria", str(criteria), "--out", str(tmp_path / "o.csv"))
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"id": "r1", "title": "T", "abstract": "short"}))
    call_command("index_records", str(records))
    screening, index = ScreeningJob.objects.get(), IndexJob.objects.get()
    assert (screening.owner, screening.api_key_label) == (index.owner, index.api_key_label) == ("cli", "command line")

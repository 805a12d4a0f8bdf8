"""AutoIndexer over the API and the CLI, with the worker path and the fake provider over HTTP."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from django.core.management import CommandError, call_command

from indexer.models import IndexJob, IndexResult
from indexer.prompts import FIELDS
from tests.factories import cohen_papers

pytestmark = pytest.mark.django_db(transaction=True)

RUN = "/v1/indexer/run"
JOBS = "/v1/indexer/jobs"
MISSING = "00000000-0000-4000-8000-000000000000"


def real_records(n: int, start: int = 0) -> list[dict]:
    papers = [p for p in cohen_papers(limit=400) if len(p["abstract"].split()) > 60][start:start + n]
    return [{"id": p["id"], "title": p["title"], "abstract": p["abstract"]} for p in papers]


BAD = [
    {"id": "absent", "title": "No abstract key"},
    {"id": "null", "title": "Null abstract", "abstract": None},
    {"id": "blank", "title": "Blank abstract", "abstract": "   \n "},
    {"id": "short", "title": "Short", "abstract": "Sumatriptan relieved migraine in most adults within two hours."},
    {"id": "html", "title": "Markup", "abstract": "<div><img src='x.png'/><br/>&nbsp;&#160;<span>1.2 / 3.4</span></div>"},
    {"id": "binary", "title": "Binary", "abstract": "\x00\x01\x02\ufffd\ufffd%PDF-1.4 0 0 0 \x07\x08 1234 5678 9999 ####"},
]
EXPECTED_BAD = {"absent": "missing_abstract", "null": "missing_abstract", "blank": "missing_abstract",
                "short": "too_short", "html": "malformed", "binary": "malformed"}


def prompts_sent(fake) -> list[str]:
    return [next(m["content"] for m in r["body"]["messages"] if m["role"] == "user") for r in fake.requests]


# --- POST /v1/indexer/run -------------------------------------------------------


def test_run_gives_every_record_a_status_and_spends_tokens_only_on_indexable_ones(api, fake_openai):
    good = real_records(3)
    response = api.post(RUN, {"records": good + BAD}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    statuses = {r["id"]: r["indexing_status"] for r in body["records"]}
    assert statuses == {**{r["id"]: "ok" for r in good}, **EXPECTED_BAD}
    assert [r["id"] for r in body["records"]] == [r["id"] for r in good + BAD]  # input order
    assert {e["id"]: e["indexing_status"] for e in body["errors"]} == EXPECTED_BAD
    assert all(e["extraction_error"] for e in body["errors"])
    assert fake_openai.count == 3  # prechecked records cost nothing
    ok = body["records"][0]
    assert set(ok["fields"]) == set(FIELDS) and ok["extraction_error"] is None
    assert isinstance(ok["fields"]["outcomes"], list) and isinstance(ok["fields"]["keywords"], list)
    assert body["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"]
    assert body["cost_usd"] > 0 and body["llm_backend"] == "openai"


def test_run_returns_only_the_requested_fields(api, fake_openai):
    response = api.post(RUN, {"records": real_records(2), "fields": ["sample_size", "population"]}, format="json")
    assert response.status_code == 200
    assert all(set(r["fields"]) == {"population", "sample_size"} for r in response.json()["records"])
    schema = fake_openai.requests[-1]["body"]["response_format"]["json_schema"]
    assert schema["name"] == "IndexedRecord" and set(schema["schema"]["properties"]) == {"population", "sample_size"}


def test_html_is_stripped_before_the_call(api, fake_openai):
    record = real_records(1)[0]
    record["abstract"] = "<p>" + record["abstract"].replace(". ", ".<br/> &amp; ") + "</p>"
    body = api.post(RUN, {"records": [record]}, format="json").json()
    assert body["records"][0]["indexing_status"] == "ok"
    assert "<br/>" not in prompts_sent(fake_openai)[0] and "&amp;" not in prompts_sent(fake_openai)[0]


def test_rejected_key_fails_the_whole_request_with_400_auth(api, fake_openai):
    fake_openai.config.valid_keys = {"sk-someone-else"}
    response = api.post(RUN, {"records": real_records(3)}, format="json")
    assert response.status_code == 400 and response.json()["error_category"] == "auth"


def test_429_and_5xx_are_retried(api, fake_openai):
    fake_openai.config.script = ["429", "500", "429"]
    response = api.post(RUN, {"records": real_records(2)}, format="json")
    assert response.status_code == 200
    assert [r["indexing_status"] for r in response.json()["records"]] == ["ok", "ok"]
    assert fake_openai.count == 5


def test_one_exhausted_record_never_fails_the_batch(api, fake_openai, settings):
    settings.CRYSTALLISE_LLM_CONCURRENCY = 1
    settings.CRYSTALLISE_LLM_MAX_ATTEMPTS = 2
    fake_openai.config.script = ["500", "500"]
    body = api.post(RUN, {"records": real_records(2)}, format="json").json()
    assert [r["indexing_status"] for r in body["records"]] == ["llm_error", "ok"]
    assert body["errors"][0]["extraction_error"].startswith("The model provider failed")


def test_run_answers_within_its_time_limit_with_the_unfinished_records_as_llm_error(api, fake_openai, settings):
    settings.CRYSTALLISE_SYNC_TIMEOUT = 1.5
    settings.CRYSTALLISE_LLM_CONCURRENCY = 1
    fake_openai.config.latency = 0.6  # two of the three records fit in 1.5 s, one at a time
    started = time.monotonic()
    response = api.post(RUN, {"records": real_records(3)}, format="json")
    assert time.monotonic() - started < 2.5
    body = response.json()
    assert response.status_code == 200
    assert [r["indexing_status"] for r in body["records"]] == ["ok", "ok", "llm_error"]
    assert "/v1/indexer/jobs" in body["errors"][0]["extraction_error"]
    assert body["usage"]["input_tokens"] > 0


def test_more_than_100_records_points_to_jobs_and_the_command(api, fake_openai):
    records = [{"id": f"r{i}", "title": "t", "abstract": "a"} for i in range(101)]
    response = api.post(RUN, {"records": records}, format="json")
    assert response.status_code == 400 and response.json()["error_category"] == "validation"
    assert "/v1/indexer/jobs" in response.json()["detail"] and "index_records" in response.json()["detail"]
    assert fake_openai.count == 0


@pytest.mark.parametrize("body", [
    {"records": []},
    {"records": [{"title": "no id"}]},
    {"records": [{"id": "a", "abstract": 3}]},
    {"records": [{"id": "a"}], "fields": ["colour"]},
    {"records": [{"id": "a"}], "model": "gpt-3.5-turbo"},
    {"records": [{"id": "a"}], "extra": True},
])
def test_run_invalid_input_is_400(api, fake_openai, body):
    response = api.post(RUN, body, format="json")
    assert response.status_code == 400 and response.json()["error_category"] == "validation"
    assert fake_openai.count == 0


def test_run_budget_cap(api, fake_openai):
    response = api.post(RUN, {"records": real_records(2), "max_estimated_cost_usd": 0.00000001}, format="json")
    assert response.status_code == 400 and response.json()["error_category"] == "budget"
    assert fake_openai.count == 0


def test_run_without_service_key_is_401_and_get_is_405(anon, api):
    assert anon.post(RUN, {"records": [{"id": "a"}]}, format="json").status_code == 401
    response = api.get(RUN)
    assert response.status_code == 405 and response.json()["error_category"] == "validation"


# --- jobs ----------------------------------------------------------------------------


def test_job_end_to_end(api, anon, fake_openai, run_queue):
    records = real_records(5) + BAD
    response = api.post(JOBS, {"records": records, "fields": ["population", "study_design"]}, format="json")
    assert response.status_code == 202, response.json()
    job = response.json()
    assert job["status"] == "pending" and response["Retry-After"] == "2" and job["estimated_cost_usd"] > 0
    assert job["progress"] == {"total": 11, "processed": 0, "ok": 0, "errored": 0}
    assert api.get(f"{JOBS}/{job['id']}")["Retry-After"] == "2"
    run_queue()
    done = api.get(f"{JOBS}/{job['id']}").json()
    assert done["status"] == "completed" and done["error_category"] is None
    assert done["progress"] == {"total": 11, "processed": 11, "ok": 5, "errored": 6}
    assert done["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"] and done["cost_usd"] > 0
    assert done["finished_at"] and done["results_url"].endswith(f"/v1/indexer/jobs/{job['id']}/results")
    assert fake_openai.count == 5

    page = api.get(f"{JOBS}/{job['id']}/results", {"page_size": 4}).json()
    assert [r["id"] for r in page["results"]] == [r["id"] for r in records[:4]] and page["next"]
    assert set(page["results"][0]["fields"]) == {"population", "study_design"}
    errors = api.get(f"{JOBS}/{job['id']}/results", {"indexing_status": "malformed"}).json()["results"]
    assert {r["id"] for r in errors} == {"html", "binary"}
    # Every result names the backend, the pre-checked ones (no call made) included.
    every = api.get(f"{JOBS}/{job['id']}/results", {"page_size": 100}).json()["results"]
    assert {r["llm_backend"] for r in every} == {"openai"}

    csv_response = api.get(f"{JOBS}/{job['id']}/results", {"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(csv_response.streaming_content).decode())))
    assert len(rows) == 11 and {"id", "indexing_status", "population", "study_design"} <= set(rows[0])
    jsonl = b"".join(api.get(f"{JOBS}/{job['id']}/results", {"format": "jsonl"}).streaming_content).decode()
    assert [json.loads(line)["id"] for line in jsonl.splitlines()] == [r["id"] for r in records]

    listed = api.get(JOBS).json()
    assert [j["id"] for j in listed["results"]] == [job["id"]]
    other = anon.__class__()
    other.credentials(HTTP_X_API_KEY="another-service-key")
    assert other.get(f"{JOBS}/{job['id']}").status_code == 404
    assert other.get(f"{JOBS}/{job['id']}/results").status_code == 404
    assert other.delete(f"{JOBS}/{job['id']}").status_code == 404
    assert other.get(JOBS).json()["results"] == []

    assert api.delete(f"{JOBS}/{job['id']}").status_code == 204
    assert not IndexResult.objects.exists() and api.get(f"{JOBS}/{job['id']}").status_code == 404


def test_cancel_active_job(api, fake_openai, run_queue):
    job = api.post(JOBS, {"records": real_records(3)}, format="json").json()
    response = api.delete(f"{JOBS}/{job['id']}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run_queue()
    assert api.get(f"{JOBS}/{job['id']}").json()["status"] == "cancelled"
    assert fake_openai.count == 0


def test_job_from_an_uploaded_file(api, fake_openai, run_queue):
    lines = "\n".join(json.dumps(r) for r in real_records(3))
    upload = io.BytesIO(lines.encode())
    upload.name = "records.jsonl"
    response = api.post(JOBS, {"records_file": upload, "fields": "keywords,sample_size"}, format="multipart")
    assert response.status_code == 202, response.json()
    assert response.json()["fields"] == ["sample_size", "keywords"]
    run_queue()
    assert api.get(f"{JOBS}/{response.json()['id']}").json()["progress"]["ok"] == 3


def test_job_with_a_rejected_key_fails_auth(api, fake_openai, run_queue):
    fake_openai.config.valid_keys = {"sk-someone-else"}
    job = api.post(JOBS, {"records": real_records(3)}, format="json").json()
    run_queue()
    done = api.get(f"{JOBS}/{job['id']}").json()
    assert done["status"] == "failed" and done["error_category"] == "auth"


def test_job_errors(api, anon, fake_openai):
    assert anon.post(JOBS, {"records": real_records(1)}, format="json").status_code == 401
    assert anon.get(JOBS).status_code == 401
    response = api.post(JOBS, {"fields": ["population"]}, format="json")
    assert response.status_code == 400 and "records" in response.json()["errors"]
    assert api.get(f"{JOBS}/{MISSING}").status_code == 404
    assert api.get(f"{JOBS}/{MISSING}/results").json()["error_category"] == "not_found"
    assert api.delete(f"{JOBS}/{MISSING}").status_code == 404
    assert api.put(f"{JOBS}/{MISSING}", {}, format="json").status_code == 405
    assert api.delete(JOBS).status_code == 405
    assert api.get(JOBS, {"status": "sleeping"}).status_code == 400


# --- the management command --------------------------------------------------


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "records.jsonl"
    records = real_records(30) + BAD[:2]
    path.write_text("\n".join(json.dumps(r) for r in records))
    return path, records


def titles_sent(fake) -> list[str]:
    return [p.split("\n", 1)[0].removeprefix("Title: ") for p in prompts_sent(fake)]


def test_command_indexes_a_file_and_writes_jsonl(fake_openai, records_file, tmp_path, capsys):
    path, records = records_file
    out = tmp_path / "out.jsonl"
    call_command("index_records", str(path), "--out", str(out), "--fields", "population,keywords", "--concurrency", "8")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [r["id"] for r in records]
    assert sum(line["indexing_status"] == "ok" for line in lines) == 30
    printed = capsys.readouterr().out
    assert "30 ok" in printed and "missing_abstract 2" in printed and "tokens:" in printed
    assert fake_openai.count == 30
    # A rerun finds the finished job and calls nobody; --force redoes everything in a fresh job.
    call_command("index_records", str(path), "--fields", "population,keywords")
    assert fake_openai.count == 30
    call_command("index_records", str(path), "--fields", "population,keywords", "--force")
    assert fake_openai.count == 60 and IndexJob.objects.count() == 2


def test_command_rerun_of_a_changed_file_indexes_only_new_or_edited_records(fake_openai, records_file, tmp_path, capsys):
    path, records = records_file
    call_command("index_records", str(path), "--fields", "population,keywords")
    assert fake_openai.count == 30
    first = {r.record.record_id: r.fields for r in IndexResult.objects.select_related("record")}
    # Three records appended, one abstract edited: only those four are sent.
    edited = {**records[0], "abstract": records[0]["abstract"] + " Adverse events were rare."}
    changed = [edited, *records[1:], *real_records(3, start=30)]
    path.write_text("\n".join(json.dumps(r) for r in changed))
    out = tmp_path / "out.jsonl"
    tokens_before = fake_openai.stats["prompt_tokens"]
    call_command("index_records", str(path), "--fields", "population,keywords", "--out", str(out))
    assert fake_openai.count == 34
    assert "31 of 35 records were indexed by an earlier run" in capsys.readouterr().out
    lines = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert list(lines) == [r["id"] for r in changed]
    assert all(lines[rid]["fields"] == first[rid] for rid in first if rid != edited["id"])
    newest = IndexJob.objects.latest("created_at")
    assert newest.status == "completed" and (newest.processed, newest.ok, newest.errored) == (35, 33, 2)
    # Billed: the four records sent this time, not the reused ones.
    assert newest.usage.input_tokens == fake_openai.stats["prompt_tokens"] - tokens_before > 0
    # Other fields are another question: nothing is reused.
    call_command("index_records", str(path), "--fields", "population")
    assert fake_openai.count == 34 + 33


@pytest.mark.parametrize(("extra", "message"), [
    (["--concurrency", "-3"], "concurrency"),
    (["--concurrency", "0"], "concurrency"),
    (["--out", "/nonexistent-dir/out.jsonl"], "no directory"),
])
def test_command_refuses_bad_options_before_calling_anyone(fake_openai, records_file, extra, message):
    path, _ = records_file
    with pytest.raises(CommandError, match=message):
        call_command("index_records", str(path), *extra)
    assert fake_openai.count == 0 and not IndexJob.objects.exists()


def test_command_resumes_after_a_provider_failure_without_rebilling(fake_openai, records_file):
    path, records = records_file
    fake_openai.config.fail_after = 10  # then every call is a 401: the job stops, failed
    with pytest.raises(CommandError, match="auth"):
        call_command("index_records", str(path), "--concurrency", "1")
    first = {r.record.title for r in IndexResult.objects.filter(indexing_status="ok").select_related("record")}
    assert len(first) == 10
    fake_openai.config.fail_after = None
    fake_openai.reset()
    call_command("index_records", str(path), "--concurrency", "4")
    job = IndexJob.objects.get()
    assert job.status == "completed" and job.processed == job.total == 32 and job.ok == 30
    assert IndexResult.objects.filter(job=job).count() == 32
    assert not first & set(titles_sent(fake_openai)) and fake_openai.count == 20


def test_command_resumes_after_being_killed_halfway(fake_openai, records_file, monkeypatch):
    from tqdm import tqdm

    from indexer.management.commands import index_records

    class KilledBar(tqdm):
        seen = 0

        def update(self, n=1):
            super().update(n)
            KilledBar.seen += n
            if KilledBar.seen >= 12:
                raise KeyboardInterrupt

    path, records = records_file
    monkeypatch.setattr(index_records, "tqdm", KilledBar)
    with pytest.raises(CommandError, match="Interrupted") as killed:
        call_command("index_records", str(path), "--concurrency", "2")
    assert killed.value.returncode == 130
    # The shared runner currently concludes an interrupted run as `completed` (reported to the
    # lead); the rerun reopens a job with unindexed records either way.
    assert IndexJob.objects.get().processed < 32
    saved = {r.record.title for r in IndexResult.objects.filter(indexing_status="ok").select_related("record")}
    assert saved and IndexResult.objects.count() < 32
    monkeypatch.setattr(index_records, "tqdm", tqdm)
    time.sleep(0.3)  # calls in flight at the kill still reach the fake: not this run's
    fake_openai.reset()
    call_command("index_records", str(path), "--concurrency", "4")
    job = IndexJob.objects.get()
    assert job.status == "completed" and job.processed == 32 and job.ok == 30
    assert IndexResult.objects.count() == 32
    sent = titles_sent(fake_openai)
    assert not saved & set(sent)
    assert len(sent) == len(set(sent)) == 30 - len(saved)


def test_command_started_twice_at_once_on_one_file_shares_one_job(fake_openai, records_file, monkeypatch):
    """The other run creates the file's job between this run's lookup and its own insert."""
    from indexer.management.commands import index_records
    from indexer.services import job_create as real_job_create

    path, records = records_file

    def racing_job_create(**kwargs):
        real_job_create(**kwargs)  # the other process wins the insert
        return real_job_create(**kwargs)

    monkeypatch.setattr(index_records, "job_create", racing_job_create)
    call_command("index_records", str(path))
    job = IndexJob.objects.get()
    assert job.status == "completed" and job.processed == len(records)
    assert fake_openai.count == 30

"""Screening jobs end to end over the API, with the worker path and the fake provider over HTTP."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest

from crystallise.jobs.models import JobSecret
from screening.models import ScreeningJob, ScreeningResult
from tests.conftest import SERVER_OPENAI_KEY
from tests.factories import FIXTURES, cohen_papers, paper

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/screening/jobs"
CRITERIA = {"research_question": "Do triptans relieve migraine?",
            "inclusion": ["randomized trial", "migraine treatment"], "exclusion": ["pediatric children"]}
PAPERS = [
    paper("p1", "Sumatriptan for migraine treatment", "A randomized trial of migraine treatment in adults."),
    paper("p2", "Hip fracture surgery outcomes", "A cohort of elderly patients after hip surgery."),
    paper("p3", "Migraine in children", "A randomized trial of migraine treatment in pediatric children."),
    paper("p4", "Migraine epidemiology", "Prevalence of migraine in a population survey."),
]


def submit(api, **body):
    payload = {"criteria": CRITERIA, "papers": PAPERS, **body}
    return api.post(URL, payload, format="json")


def finished(api, run_queue, job_id):
    run_queue()
    return api.get(f"{URL}/{job_id}").json()


def test_happy_path_with_predictable_verdicts(api, fake_openai, run_queue):
    response = submit(api, project_id="proj-1")
    assert response.status_code == 202, response.json()
    job = response.json()
    assert job["status"] == "pending" and response["Retry-After"] == "2"
    assert job["estimated_cost_usd"] > 0 and job["error_category"] is None
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed"
    assert body["progress"] == {"total": 4, "screened": 4, "included": 1, "excluded": 3, "errored": 0}
    results = {r["paper_id"]: r for r in body["results"]}
    assert results["p1"]["decision"] == "include" and results["p1"]["score"] == 1.0
    assert results["p3"]["decision"] == "exclude" and results["p3"]["score"] == 0.0  # exclusion met
    assert results["p2"]["criteria"][0] == {
        "kind": "inclusion", "index": 0, "text": "randomized trial", "verdict": "not_met",
        "reasoning": results["p2"]["criteria"][0]["reasoning"]}
    assert all(r["llm_backend"] == "openai" for r in results.values())
    assert body["usage"]["input_tokens"] == fake_openai.stats["prompt_tokens"]
    assert body["usage"]["output_tokens"] == fake_openai.stats["completion_tokens"]
    assert body["cost_usd"] > 0 and body["cost_usd"] <= body["estimated_cost_usd"]
    assert fake_openai.count == 4
    assert fake_openai.stats["keys_seen"] == {SERVER_OPENAI_KEY: 4}
    assert body["clusters"] == [{"id": 0, "label": "all", "size": 4, "screened": 4, "included": 1}]
    assert "Retry-After" not in api.get(f"{URL}/{job['id']}")


def test_threshold_half_includes_unclear(api, fake_openai, run_queue):
    # p4 mentions only "migraine" of "migraine treatment trial": unclear → score 0.5
    criteria = {"inclusion": ["migraine treatment trial"], "exclusion": []}
    job = submit(api, criteria=criteria, threshold=0.5).json()
    body = finished(api, run_queue, job["id"])
    results = {r["paper_id"]: r for r in body["results"]}
    assert results["p4"]["score"] == 0.5 and results["p4"]["decision"] == "include"
    assert results["p4"]["needs_review"] is True
    strict = finished(api, run_queue, submit(api, criteria=criteria).json()["id"])
    assert {r["paper_id"]: r["decision"] for r in strict["results"]}["p4"] == "exclude"


def test_empty_but_completed(api, fake_openai, run_queue):
    job = submit(api, criteria={"inclusion": ["quantum chromodynamics lattice"]}).json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed" and body["progress"]["included"] == 0


def test_cluster_include_filter_skips_llm(api, fake_openai, run_queue):
    papers = [
        paper("r1", "A randomized controlled trial of sumatriptan", "Double-blind placebo-controlled randomized trial of migraine treatment."),
        paper("c1", "A case report of migraine", "We report a case of a woman with migraine treatment failure."),
    ]
    job = submit(api, papers=papers, clusters={"by": "study_design", "include": ["RCT"]}).json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed"
    results = {r["paper_id"]: r for r in body["results"]}
    assert results["c1"]["decision"] == "exclude" and results["c1"]["score"] is None
    assert results["c1"]["criteria"] == [] and "cluster" in results["c1"]["reasoning"]
    assert fake_openai.count == 1
    labels = {c["label"]: c for c in body["clusters"]}
    assert labels["case_report"]["screened"] == 1 and labels["rct"]["size"] == 1
    assert body["progress"]["excluded"] >= 1


def test_second_active_job_for_project_conflicts(api, fake_openai):
    first = submit(api, project_id="P").json()
    response = submit(api, project_id="P")
    assert response.status_code == 409
    assert response.json()["error_category"] == "conflict"
    assert response.json()["active_job_id"] == first["id"]
    assert submit(api).status_code == 202  # no project → no check


def test_concurrent_posts_one_wins(fake_openai, settings):
    from rest_framework.test import APIClient

    barrier = threading.Barrier(6)
    codes = []

    def post():
        from django.db import connection

        client = APIClient()
        client.credentials(HTTP_X_API_KEY="k")
        barrier.wait()
        try:
            codes.append(client.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "project_id": "race"}, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] + [409] * 5
    assert ScreeningJob.objects.filter(project_id="race").count() == 1


def test_idempotent_post_returns_same_job(api, fake_openai):
    first = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    again = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS[:1]}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    assert other.status_code == 409
    assert ScreeningJob.objects.count() == 1


def test_budget_preflight_rejects_before_any_call(api, fake_openai):
    response = submit(api, max_estimated_cost_usd=0.0000001)
    assert response.status_code == 400 and response.json()["error_category"] == "budget"
    assert fake_openai.count == 0 and ScreeningJob.objects.count() == 0


def test_provider_401_fails_job_with_auth(api, fake_openai, run_queue):
    fake_openai.config.valid_keys = {"sk-only-this"}
    job = submit(api).json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "failed" and body["error_category"] == "auth"
    assert "sk-" not in body["error_message"]


def test_429_and_5xx_are_survived(api, fake_openai, run_queue):
    fake_openai.config.script = ["429", "500", "500", "429"]
    body = finished(api, run_queue, submit(api).json()["id"])
    assert body["status"] == "completed" and body["progress"]["errored"] == 0


def test_exhausted_retries_on_one_paper_do_not_fail_job(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_LLM_MAX_ATTEMPTS = 2
    settings.CRYSTALLISE_LLM_CONCURRENCY = 1  # the scripted faults hit the first paper twice
    fake_openai.config.script = ["500", "500"]
    papers = PAPERS + [paper(f"x{i}", "Migraine randomized trial", "randomized trial of migraine treatment") for i in range(6)]
    body = finished(api, run_queue, submit(api, papers=papers).json()["id"])
    assert body["status"] == "completed"
    assert body["progress"]["errored"] == 1 and body["progress"]["screened"] == 10
    errored = [r for r in body["results"] if r["error"]]
    assert errored[0]["decision"] is None


def test_per_request_key_is_used_and_never_stored(api, fake_openai, run_queue):
    secret = "sk-per-request-SECRET-123456"
    response = api.post(URL, {"criteria": CRITERIA, "papers": PAPERS}, format="json", HTTP_X_OPENAI_API_KEY=secret)
    job_id = response.json()["id"]
    assert JobSecret.objects.filter(job_id=job_id).exists()
    body = finished(api, run_queue, job_id)
    assert body["status"] == "completed"
    assert fake_openai.stats["keys_seen"] == {secret: 4}
    assert not JobSecret.objects.exists()
    from django.db import connection

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            assert secret not in repr(cursor.fetchall()), table


def test_no_openai_key_fails_fast(api, fake_openai, settings):
    settings.CRYSTALLISE_OPENAI_API_KEY = ""
    response = submit(api)
    assert response.status_code == 400 and response.json()["error_category"] == "auth"


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


@pytest.mark.parametrize("name", ["papers.ris", "papers.csv", "papers.nbib", "papers.jsonl"])
def test_file_uploads(api, fake_openai, name):
    with open(FIXTURES / name, "rb") as fh:
        response = api.post(URL, {"criteria": json.dumps(CRITERIA), "papers_file": fh}, format="multipart")
    assert response.status_code == 202, response.json()
    assert response.json()["progress"]["total"] >= 3


@pytest.mark.parametrize("body,field", [
    ({"papers": PAPERS, "criteria": {"inclusion": [], "exclusion": []}}, "criteria"),
    ({"papers": PAPERS + [PAPERS[0]], "criteria": CRITERIA}, "papers"),
    ({"papers": PAPERS, "criteria": CRITERIA, "threshold": 1.5}, "threshold"),
    ({"papers": PAPERS, "criteria": CRITERIA, "model": "gpt-9"}, "model"),
    ({"papers": PAPERS, "criteria": CRITERIA, "max_estimated_cost_usd": -1}, "max_estimated_cost_usd"),
    ({"papers": PAPERS, "criteria": CRITERIA, "surprise": 1}, "surprise"),
    ({"criteria": CRITERIA}, "papers"),
])
def test_invalid_input_is_400_and_stores_nothing(api, fake_openai, body, field):
    response = api.post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    payload = response.json()
    assert payload["error_category"] == "validation"
    assert any(key.startswith(field) for key in payload.get("errors", {})) or field in payload["detail"]
    assert ScreeningJob.objects.count() == 0


def test_real_dataset_job_with_mock_backend(api, settings, run_queue):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    papers = [{k: v for k, v in p.items() if k != "label"} for p in cohen_papers("Triptans", limit=120)]
    job = api.post(URL, {"criteria": CRITERIA, "papers": papers, "clusters": {"by": "topic", "count": 3}}, format="json").json()
    body = finished(api, run_queue, job["id"])
    assert body["status"] == "completed" and body["progress"]["screened"] == 120
    assert body["cost_usd"] == 0 and all(r["llm_backend"] == "mock" for r in body["results"])
    assert sum(c["size"] for c in body["clusters"]) == 120


def test_callback_to_a_private_address_is_refused(api, fake_openai):
    response = submit(api, callback_url="http://127.0.0.1:9/hook")
    assert response.status_code == 400 and "callback_url" in response.json()["errors"]
    assert submit(api, callback_url="ftp://example.org/x").status_code == 400


def test_completion_callback_is_signed_and_recorded(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True  # the receiver below listens on loopback
    import hashlib
    import hmac
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from crystallise.callbacks import secret

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["X-Crystallise-Signature"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        job = submit(api, callback_url=url).json()
        run_queue()
    finally:
        server.shutdown()
    signature, body = received[0]
    t, v1 = (part.split("=", 1)[1] for part in signature.split(","))
    assert hmac.compare_digest(v1, hmac.new(secret(), f"{t}.".encode() + body, hashlib.sha256).hexdigest())
    assert json.loads(body)["status"] == "completed" and json.loads(body)["id"] == job["id"]
    assert api.get(f"{URL}/{job['id']}").json()["callback_status"] == "delivered"
    assert api.get(f"{URL}/{job['id']}").json()["callback_error"] is None


def test_a_callback_redirect_is_not_followed_and_the_failure_is_recorded(api, fake_openai, run_queue, settings):
    """A receiver answering 302 cannot send the service's request anywhere else (an address nobody checked)."""
    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(("POST", self.path))
            self.send_response(302 if self.path == "/hook" else 500)
            self.send_header("Location", "/internal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            seen.append(("GET", self.path))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job = submit(api, callback_url=f"http://127.0.0.1:{server.server_port}/hook").json()
        run_queue()
        from screening.services import callback_deliver

        body = api.get(f"{URL}/{job['id']}").json()
        assert body["callback_status"] == "failed"
        assert body["callback_error"] == "The receiver answered HTTP 302 (redirects are not followed)."
        assert set(seen) == {("POST", "/hook")}  # retried, never redirected
        ScreeningJob.objects.filter(pk=job["id"]).update(callback_url=f"http://127.0.0.1:{server.server_port}/boom")
        callback_deliver(job_id=job["id"])
        assert api.get(f"{URL}/{job['id']}").json()["callback_error"] == "The receiver answered HTTP 500."
    finally:
        server.shutdown()


def test_a_failed_callback_is_retried_after_the_configured_backoff(settings):
    """CRYSTALLISE_CALLBACK_BACKOFF seconds before the second attempt, twice that before the third."""
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from crystallise import callbacks

    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True
    settings.CRYSTALLISE_CALLBACK_BACKOFF = 0.1
    arrivals = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_POST(self):
            arrivals.append(time.monotonic())
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        outcome = callbacks.deliver(f"http://127.0.0.1:{server.server_port}/hook", {"id": "1"})
    finally:
        server.shutdown()
    assert outcome == (False, 3, "The receiver answered HTTP 503.")
    first_wait, second_wait = arrivals[1] - arrivals[0], arrivals[2] - arrivals[1]
    # Upper bounds well under the 2 s / 4 s a default backoff would wait.
    assert 0.1 <= first_wait < 1.5 and 0.2 <= second_wait < 1.5, (first_wait, second_wait)


def test_a_callback_connects_only_to_the_address_it_checked(monkeypatch, settings):
    """DNS rebinding: the name resolves to a public address when checked, to loopback a moment later."""
    import socket

    from crystallise import callbacks

    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = False
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]]
                   + [[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]] * 5)
    connected = []

    class Network:
        SOCK_STREAM, gaierror = socket.SOCK_STREAM, socket.gaierror

        @staticmethod
        def getaddrinfo(host, port, type=0):
            return next(answers)

        @staticmethod
        def create_connection(address, timeout=None):
            connected.append(address)
            raise ConnectionRefusedError("refused")

    monkeypatch.setattr(callbacks, "socket", Network)
    delivered, attempts, error = callbacks.deliver("http://hook.example.org/x", {"id": "1"})
    assert connected == [("93.184.216.34", 80)]  # the checked address, never the rebound one
    assert (delivered, attempts) == (False, 1) and error.startswith("Not sent: callback_url must point to a public")


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


def test_project_ids_are_namespaced_by_key(api, fake_openai):
    from rest_framework.test import APIClient

    submit(api, project_id="shared-name")
    other = APIClient()
    other.credentials(HTTP_X_API_KEY="another-team")
    response = other.post(URL, {"criteria": CRITERIA, "papers": PAPERS, "project_id": "shared-name"}, format="json")
    assert response.status_code == 202

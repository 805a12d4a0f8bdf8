"""Secrets never leak, every endpoint needs a key, owners are isolated."""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys
import uuid

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from crystallise.jobs.models import JobSecret
from crystallise.models import ApiKey
from indexer.models import IndexJob
from indexer.services import job_run as index_job_run
from screening.models import ScreeningJob
from screening.services import job_run
from tests.factories import CRITERIA, papers
from tests.workers import ROOT, database_url, process_env

URL = "/v1/screening/jobs"
ABSTRACT = ("In this randomized controlled trial 240 adults with episodic migraine received a triptan or "
            "placebo; the primary outcome was pain freedom at two hours, which was higher with the triptan.")


def records(n: int) -> list[dict]:
    return [{"id": f"r{i}", "title": f"Triptan trial {i}", "abstract": ABSTRACT} for i in range(n)]


class Recorder:
    """An API client that keeps every response body, to search them all for secrets."""

    def __init__(self, key: str = "test-service-key"):
        self.client = APIClient()
        self.client.credentials(HTTP_X_API_KEY=key)
        self.bodies: list[bytes] = []

    def __getattr__(self, method):
        call = getattr(self.client, method)

        def recorded(*args, **kwargs):
            response = call(*args, **kwargs)
            content = b"".join(response.streaming_content) if response.streaming else response.content
            self.bodies.append(content + repr(dict(response.items())).encode())
            return response

        return recorded


def database_dump() -> str:
    """repr of every row of every table, plus the decoded django-q payloads."""
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - introspected names
            parts.extend(repr(row) for row in cursor.fetchall())
    for task in OrmQ.objects.all():
        parts.append(repr(SignedPackage.loads(task.payload)))
    return "\n".join(parts)


@pytest.mark.django_db(transaction=True)
def test_per_request_openai_keys_never_leak(fake_openai, caplog, settings):
    good = "sk-proj-" + secrets.token_urlsafe(24)
    bad = "sk-proj-" + secrets.token_urlsafe(24)
    worker_key = "sk-proj-" + secrets.token_urlsafe(24)
    fake_openai.config.valid_keys = {good, worker_key, "sk-server-test-key-0000"}
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "django", "django.db.backends", "django.request",
                 "django_q", "crystallise", "screening", "indexer", "criteria", "asyncio", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    settings.CRYSTALLISE_LLM_CONCURRENCY = 4
    api = Recorder()

    # Screening with a good and a rejected per-request key.
    ok_job = api.post(URL, {"criteria": CRITERIA, "papers": papers(12)}, format="json", HTTP_X_OPENAI_API_KEY=good).json()
    bad_job = api.post(URL, {"criteria": CRITERIA, "papers": papers(12)}, format="json", HTTP_X_OPENAI_API_KEY=bad).json()
    assert JobSecret.objects.filter(job_id__in=[ok_job["id"], bad_job["id"]]).count() == 2
    assert job_run(job_id=ok_job["id"]) == "completed"
    assert job_run(job_id=bad_job["id"]) == "failed"
    assert api.get(f"{URL}/{bad_job['id']}").json()["error_category"] == "auth"

    # Indexing: a job (good key, then a rejected one) and a synchronous run.
    index_ok = api.post("/v1/indexer/jobs", {"records": records(5)}, format="json", HTTP_X_OPENAI_API_KEY=good).json()
    index_bad = api.post("/v1/indexer/jobs", {"records": records(5)}, format="json", HTTP_X_OPENAI_API_KEY=bad).json()
    assert index_job_run(job_id=index_ok["id"]) == "completed"
    assert index_job_run(job_id=index_bad["id"]) == "failed"
    assert api.get(f"/v1/indexer/jobs/{index_bad['id']}").json()["error_category"] == "auth"
    assert api.post("/v1/indexer/run", {"records": records(2)}, format="json", HTTP_X_OPENAI_API_KEY=good).status_code == 200
    response = api.post("/v1/indexer/run", {"records": records(2)}, format="json", HTTP_X_OPENAI_API_KEY=bad)
    assert response.status_code == 400 and response.json()["error_category"] == "auth"
    consolidate = {"criteria": [{"text": "adults", "kind": "inclusion"}, {"text": "Adults.", "kind": "inclusion"}]}
    assert api.post("/v1/criteria/consolidate", consolidate, format="json", HTTP_X_OPENAI_API_KEY=good).status_code == 200
    assert api.post("/v1/criteria/consolidate", consolidate, format="json", HTTP_X_OPENAI_API_KEY=bad).status_code == 400

    # Outside dev mode, an OpenAI key sent in the service-key header is refused without being echoed.
    settings.CRYSTALLISE_API_KEYS = ["env-service-key-1"]
    wrong_header = Recorder(key=good)
    response = wrong_header.get(URL)
    assert response.status_code == 401 and "wrong header" in response.json()["detail"]
    api.bodies.extend(wrong_header.bodies)
    settings.CRYSTALLISE_API_KEYS = []

    # A real worker process runs a per-request-key job; its output is searched too.
    worker_job = api.post(URL, {"criteria": CRITERIA, "papers": papers(8)}, format="json",
                          HTTP_X_OPENAI_API_KEY=worker_key).json()
    env = process_env(fake=fake_openai, server_key="", CONCURRENCY=4, CRYSTALLISE_LOG_LEVEL="DEBUG")
    worker = subprocess.run([sys.executable, "-m", "tests.worker_process", worker_job["id"]], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert "STATUS completed" in worker.stdout, worker.stdout + worker.stderr
    worker_output = worker.stdout + worker.stderr
    assert "crystallise" in worker_output or "STATUS" in worker_output

    # Every job is over: no encrypted copy is left either.
    assert JobSecret.objects.count() == 0
    for job_id in (ok_job["id"], bad_job["id"], worker_job["id"]):
        api.get(f"{URL}/{job_id}")
        api.get(f"{URL}/{job_id}/results")
        api.get(f"{URL}/{job_id}/results", {"format": "csv"})
        api.get(f"{URL}/{job_id}/results", {"format": "jsonl"})
    for job_id in (index_ok["id"], index_bad["id"]):
        api.get(f"/v1/indexer/jobs/{job_id}")
        api.get(f"/v1/indexer/jobs/{job_id}/results")
    api.get(URL)
    api.get("/v1/indexer/jobs")

    # Admin: every registered model's changelist and change pages.
    admin_pages = []
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-" + secrets.token_hex(8))
    browser = APIClient()
    browser.force_login(user)
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        page = browser.get(reverse(f"admin:{info[0]}_{info[1]}_changelist"))
        assert page.status_code == 200, (info, page.status_code)
        admin_pages.append(page.content)
        for obj in model_admin.get_queryset(page.wsgi_request)[:20]:
            page = browser.get(reverse(f"admin:{info[0]}_{info[1]}_change", args=[obj.pk]))
            assert page.status_code in (200, 302), (info, obj.pk, page.status_code)
            admin_pages.append(page.content)
    assert len(admin_pages) > len(admin.site._registry)

    haystacks = {
        "database": database_dump(),
        "logs": caplog.text + "\n".join(repr(r.__dict__) for r in caplog.records),
        "worker output": worker_output,
        "api responses": b"\n".join(api.bodies).decode(errors="replace"),
        "admin pages": b"\n".join(admin_pages).decode(errors="replace"),
    }
    # Controls: each haystack really holds what was searched (a job id, the fake's answers, log records).
    hexed = ok_job["id"].replace("-", "")
    assert ok_job["id"] in haystacks["database"] or hexed in haystacks["database"]
    assert ok_job["id"] in haystacks["api responses"]
    assert ok_job["id"] in haystacks["admin pages"] or ok_job["id"][:8] in haystacks["admin pages"]
    assert "openai" in haystacks["logs"].lower() or "httpx" in haystacks["logs"].lower()
    for key in (good, bad, worker_key):
        for where, text in haystacks.items():
            assert key not in text, f"an OpenAI key leaked into the {where}"
            assert key[8:] not in text, f"the secret part of an OpenAI key leaked into the {where}"
    assert caplog.records, "logging was not captured"


@pytest.fixture
def service_keys(settings):
    settings.CRYSTALLISE_API_KEYS = ["env-service-key-1"]
    settings.CRYSTALLISE_LLM_BACKEND = "mock"


def _operations():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in schema["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                # Every path parameter ({job_id}, {sample_id}, {paper_id}) as a well-formed id.
                yield method, re.sub(r"\{[a-z_]+\}", lambda _: str(uuid.uuid4()), path)


@pytest.mark.django_db
def test_every_v1_endpoint_rejects_missing_and_wrong_keys(service_keys):
    operations = list(_operations())
    assert len(operations) >= 12
    for method, path in operations:
        public = path.startswith(("/v1/schema/", "/v1/docs/"))
        for headers in ({}, {"HTTP_X_API_KEY": "not-a-key"}, {"HTTP_X_API_KEY": " "},
                        {"HTTP_X_API_KEY": "sk-looks-like-openai-0000"}, {"HTTP_AUTHORIZATION": "Bearer env-service-key-1"}):
            response = getattr(APIClient(), method)(path, {}, format="json", **headers)
            if public:
                assert response.status_code == 200, (method, path)
                continue
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert response.json()["error_category"] == "auth"
        if not public:
            authorised = getattr(APIClient(), method)(path, {}, format="json", HTTP_X_API_KEY="env-service-key-1")
            assert authorised.status_code in (200, 400, 404), (method, path, authorised.status_code)


@pytest.mark.django_db
def test_revoked_admin_key_stops_working_at_once(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    key, secret = ApiKey.objects.create_key(name="ci")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=secret)
    assert client.get(URL).status_code == 200
    # The first admin key ended dev mode: an arbitrary key no longer works.
    assert APIClient().get(URL, HTTP_X_API_KEY="anything").status_code == 401
    key.revoke()
    response = client.get(URL)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert secret not in response.content.decode()


@pytest.mark.django_db
def test_admin_pages_require_staff(client):
    urls = [reverse("admin:index")] + [
        reverse(f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist") for m in admin.site._registry
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url
    user = get_user_model().objects.create_user("visitor", "v@example.com", "pw-visitor-123456")
    client.force_login(user)
    for url in urls:
        response = client.get(url)
        assert response.status_code in (302, 403), (url, response.status_code)
        assert response.status_code == 403 or "/login/" in response["Location"]


def _check_deploy(extra_env: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CRYSTALLISE_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "crystallise_site.settings.base",
        "DATABASE_URL": database_url(),
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": "crystallise.example.org",
        # The documented production profile behind a TLS-terminating proxy (docs/backend-guide.md).
        "DJANGO_SECURE_SSL_REDIRECT": "true",
        "DJANGO_SECURE_HSTS_SECONDS": "31536000",
        "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "DJANGO_SECURE_HSTS_PRELOAD": "true",
        **extra_env,
    })
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.django_db(transaction=True)
def test_check_deploy_is_clean_with_production_settings():
    result = _check_deploy({"CRYSTALLISE_API_KEYS": "k-" + secrets.token_urlsafe(24)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr.upper().replace("WARNINGS", ""), result.stderr
    # Without service keys only the documented dev-mode warning remains.
    result = _check_deploy({})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "crystallise.W001" in output, output
    assert "security.W" not in output, output


OTHER = "another-callers-key"


@pytest.mark.django_db(transaction=True)
def test_one_key_cannot_see_or_touch_another_keys_jobs(settings):
    settings.CRYSTALLISE_LLM_BACKEND = "mock"
    owner, other = APIClient(), APIClient()
    owner.credentials(HTTP_X_API_KEY="owner-key")
    other.credentials(HTTP_X_API_KEY=OTHER)
    screening = owner.post(URL, {"project_id": "shared", "criteria": CRITERIA, "papers": papers(3)}, format="json",
                           HTTP_IDEMPOTENCY_KEY="same").json()
    index = owner.post("/v1/indexer/jobs", {"records": records(2)}, format="json").json()
    finished = owner.post(URL, {"criteria": CRITERIA, "papers": papers(2)}, format="json").json()
    for job_id in (screening["id"], finished["id"]):
        assert job_run(job_id=job_id) == "completed"
    assert index_job_run(job_id=index["id"]) == "completed"
    response = owner.post(URL, {"project_id": "shared", "criteria": CRITERIA, "papers": papers(1)}, format="json")
    assert response.status_code == 202, response.content
    active = response.json()
    for job_id, base in ((screening["id"], URL), (index["id"], "/v1/indexer/jobs"), (finished["id"], URL),
                         (active["id"], URL)):
        for method, path, params in (("get", f"{base}/{job_id}", {}), ("get", f"{base}/{job_id}/results", {}),
                                     ("get", f"{base}/{job_id}/results", {"format": "csv"}),
                                     ("get", f"{base}/{job_id}/results", {"format": "jsonl"}),
                                     ("delete", f"{base}/{job_id}", {})):
            response = getattr(other, method)(path, params)
            assert response.status_code == 404, (method, path, params, response.status_code)
            assert response.json()["error_category"] == "not_found"
            assert job_id in response.json()["detail"] or "No " in response.json()["detail"]
    for path in (URL, "/v1/indexer/jobs", f"{URL}?project_id=shared", f"{URL}?status=completed"):
        assert other.get(path).json()["results"] == []
    # Nothing was cancelled or deleted by the other caller.
    assert ScreeningJob.objects.filter(pk=active["id"], status="pending").exists()
    assert ScreeningJob.objects.filter(pk=finished["id"]).exists()
    assert IndexJob.objects.filter(pk=index["id"]).exists()
    # Project ids and idempotency keys are namespaced per key: no conflict, no replay of the owner's job.
    mine = other.post(URL, {"project_id": "shared", "criteria": CRITERIA, "papers": papers(3)}, format="json",
                      HTTP_IDEMPOTENCY_KEY="same")
    assert mine.status_code == 202 and mine.json()["id"] != screening["id"]
    listed = {j["id"] for j in owner.get(URL).json()["results"]}
    assert mine.json()["id"] not in listed and {screening["id"], finished["id"], active["id"]} <= listed

"""Refusing abuse: per-key request and submission rates, the active-job cap, admin login lockout.

Every refusal is a 429 in the contract's error shape with Retry-After; limits are keyed by the
service key's fingerprint, never the secret.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from crystallise import throttling
from crystallise.auth import fingerprint
from tests.factories import paper

pytestmark = pytest.mark.django_db

JOBS = "/v1/screening/jobs"
INDEX_JOBS = "/v1/indexer/jobs"
CRITERIA = {"inclusion": ["randomized trial"], "exclusion": []}
ABSTRACT = " ".join(["Sumatriptan relieved migraine pain in adults in this randomized trial."] * 3)


@pytest.fixture(autouse=True)
def fresh_buckets():
    throttling.REQUESTS.clear()
    throttling.SUBMISSIONS.clear()
    yield
    throttling.REQUESTS.clear()
    throttling.SUBMISSIONS.clear()


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def assert_rate_limited(response, *, says: str) -> None:
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["error_category"] == "rate_limit" and says in body["detail"]
    assert set(body) == {"error_category", "detail"}
    assert int(response["Retry-After"]) >= 1


def submit(client: APIClient, pid: str = "p1", **headers):
    return client.post(JOBS, {"criteria": CRITERIA, "papers": [paper(pid, "Trial", ABSTRACT)]}, format="json", **headers)


# --- request rate per key -------------------------------------------------------


def test_a_key_over_its_request_rate_gets_429_with_retry_after(settings):
    settings.CRYSTALLISE_RATE_LIMIT_PER_MINUTE = 3
    hammering, other = client_for("key-hammering"), client_for("key-quiet")
    assert [hammering.get(JOBS).status_code for _ in range(3)] == [200, 200, 200]
    response = hammering.get(JOBS)
    assert_rate_limited(response, says="limit is 3 per minute")
    assert 1 <= int(response["Retry-After"]) <= 20  # one token comes back every 20 s at 3/min
    assert other.get(JOBS).status_code == 200  # another key has its own budget


def test_rates_are_kept_by_the_keys_fingerprint_never_the_secret(settings):
    settings.CRYSTALLISE_RATE_LIMIT_PER_MINUTE = 100
    secret = "cry_secret-service-key-value-0001"
    client_for(secret).get(JOBS)
    tracked = list(throttling.REQUESTS._buckets)
    assert tracked == [fingerprint(secret)]
    assert all(secret not in key for key in tracked)


def test_the_request_rate_refills_over_time():
    buckets = throttling.TokenBuckets()
    assert [buckets.take("k", 60, now=100.0) for _ in range(60)] == [0.0] * 60
    assert buckets.take("k", 60, now=100.0) == pytest.approx(1.0)  # 60/min: a token a second
    assert buckets.take("k", 60, now=101.5) == 0.0


def test_a_rate_of_zero_turns_the_limit_off(settings):
    settings.CRYSTALLISE_RATE_LIMIT_PER_MINUTE = 0
    client = client_for("key-unlimited")
    assert {client.get(JOBS).status_code for _ in range(50)} == {200}


def test_submissions_have_their_own_lower_rate_and_reads_go_on(settings, fake_openai):
    settings.CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE = 2
    client = client_for("key-submitter")
    assert submit(client, "a").status_code == 202
    assert submit(client, "b").status_code == 202
    assert_rate_limited(submit(client, "c"), says="submissions (POST)")
    assert client.get(JOBS).status_code == 200  # polling is not a submission


def test_unauthenticated_requests_are_refused_before_any_limit(settings):
    settings.CRYSTALLISE_RATE_LIMIT_PER_MINUTE = 1
    anon = APIClient()
    assert [anon.get(JOBS).status_code for _ in range(3)] == [401, 401, 401]
    assert APIClient().get("/v1/schema/").status_code == 200  # the public schema has no key to count


# --- active jobs per key ----------------------------------------------------------


def test_a_key_at_its_active_job_cap_gets_429_until_one_ends(settings, fake_openai):
    settings.CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY = 2
    client, other = client_for("key-busy"), client_for("key-idle")
    first = submit(client, "a").json()["id"]
    records = [{"id": "r1", "title": "Trial", "abstract": ABSTRACT}]
    assert client.post(INDEX_JOBS, {"records": records}, format="json").status_code == 202  # indexing counts too
    refused = submit(client, "c")
    assert_rate_limited(refused, says="already has 2 active jobs")
    assert "the limit is 2" in refused.json()["detail"]
    assert submit(other, "a").status_code == 202  # per key
    assert client.delete(f"{JOBS}/{first}").json()["status"] == "cancelled"
    assert submit(client, "d").status_code == 202


def test_an_idempotent_retry_at_the_cap_returns_its_job(settings, fake_openai):
    settings.CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY = 1
    client = client_for("key-retrying")
    created = submit(client, "a", HTTP_IDEMPOTENCY_KEY="attempt-1")
    assert created.status_code == 202
    retried = submit(client, "a", HTTP_IDEMPOTENCY_KEY="attempt-1")
    assert retried.status_code == 200 and retried.json()["id"] == created.json()["id"]
    assert_rate_limited(submit(client, "b", HTTP_IDEMPOTENCY_KEY="attempt-2"), says="active jobs")


def test_a_cap_of_zero_means_no_cap(settings, fake_openai):
    settings.CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY = 0
    client = client_for("key-many")
    assert {submit(client, f"p{i}").status_code for i in range(5)} == {202}


# --- admin login lockout (django-axes) ------------------------------------------


LOGIN = "/admin/login/?next=/admin/"


def try_login(client: Client, username: str, password: str):
    return client.post(LOGIN, {"username": username, "password": password})


@pytest.fixture
def operator(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return get_user_model().objects.create_superuser("ops", "ops@example.org", "right-password-123")


def test_admin_logins_lock_after_repeated_failures(operator, settings):
    client = Client()
    assert [try_login(client, "ops", "wrong").status_code for _ in range(2)] == [200, 200]  # the form again
    locked = try_login(client, "ops", "wrong")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) == settings.CRYSTALLISE_ADMIN_LOCKOUT_MINUTES * 60
    assert "Too many failed logins" in locked.content.decode() and "right-password" not in locked.content.decode()
    # Locked: even the right password is refused for the cool-off.
    assert try_login(client, "ops", "right-password-123").status_code == 429
    assert "_auth_user_id" not in client.session
    # Another username from the same address is not locked.
    get_user_model().objects.create_superuser("ops2", "ops2@example.org", "other-password-456")
    assert try_login(Client(), "ops2", "other-password-456").status_code == 302


def test_an_operator_can_lift_a_lockout(operator):
    client = Client()
    for _ in range(3):
        try_login(client, "ops", "wrong")
    assert try_login(client, "ops", "right-password-123").status_code == 429
    call_command("axes_reset", verbosity=0)
    response = try_login(client, "ops", "right-password-123")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_a_successful_login_resets_the_failure_count(operator):
    client = Client()
    for _ in range(2):
        try_login(client, "ops", "wrong")
    assert try_login(client, "ops", "right-password-123").status_code == 302
    client.logout()
    assert [try_login(client, "ops", "wrong").status_code for _ in range(2)] == [200, 200]


def test_logins_without_a_request_are_not_throttled(operator):
    # The shell and test clients authenticate without a web request: nothing to lock out.
    assert Client().login(username="ops", password="right-password-123")


def test_the_schema_documents_429_and_503_on_every_keyed_operation():
    schema = APIClient().get("/v1/schema/", HTTP_ACCEPT="application/json").json()
    operations = [op for path in schema["paths"].values() for op in path.values() if isinstance(op, dict)]
    assert operations
    for operation in operations:
        for code in ("429", "503"):
            content = operation["responses"][code]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/Error"}


@pytest.mark.parametrize("name, value", [
    ("CRYSTALLISE_RATE_LIMIT_PER_MINUTE", "-1"),
    ("CRYSTALLISE_SUBMIT_RATE_LIMIT_PER_MINUTE", "lots"),
    ("CRYSTALLISE_MAX_ACTIVE_JOBS_PER_KEY", "2.5"),
    ("CRYSTALLISE_ADMIN_LOGIN_FAILURES", "0"),
    ("CRYSTALLISE_ADMIN_LOCKOUT_MINUTES", "forever"),
    ("CRYSTALLISE_METRICS_TOKEN", "short"),
])
def test_a_bad_limit_or_token_stops_the_process_naming_the_variable(name, value):
    from tests.test_settings import manage

    result = manage("check", **{name: value})
    assert result.returncode == 1 and name in result.stderr and "Traceback" not in result.stderr

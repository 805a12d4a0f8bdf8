"""Every authentication path of /v1/: env keys, admin keys, dev mode, hints."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from crystallise.models import ApiKey

pytestmark = pytest.mark.django_db

URL = "/v1/screening/jobs"


def client(key: str | None = None) -> APIClient:
    c = APIClient()
    if key is not None:
        c.credentials(HTTP_X_API_KEY=key)
    return c


def test_missing_key_is_401_in_error_shape():
    response = client().get(URL)
    assert response.status_code == 401
    body = response.json()
    assert body["error_category"] == "auth"
    assert "X-API-Key" in body["detail"]


def test_dev_mode_accepts_any_non_empty_key():
    assert client("anything").get(URL).status_code == 200


def test_blank_key_is_rejected_even_in_dev_mode():
    assert client("   ").get(URL).status_code == 401


def test_env_keys_gate_access(settings):
    settings.CRYSTALLISE_API_KEYS = ["alpha-key", "beta-key"]
    assert client("beta-key").get(URL).status_code == 200
    response = client("gamma").get(URL)
    assert response.status_code == 401
    assert response.json()["error_category"] == "auth"
    assert "gamma" not in response.content.decode()


def test_openai_key_in_service_header_gets_swap_hint(settings):
    settings.CRYSTALLISE_API_KEYS = ["alpha-key"]
    secret = "sk-proj-abcdefghijklmnop1234"
    response = client(secret).get(URL)
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "wrong header" in detail and "X-OpenAI-API-Key" in detail
    assert secret not in response.content.decode()


def test_admin_key_works_and_ends_dev_mode_at_once():
    assert client("whatever").get(URL).status_code == 200
    key, secret = ApiKey.objects.create_key(name="lab")
    assert client(secret).get(URL).status_code == 200
    # Dev mode ended without a restart: arbitrary keys are refused now.
    assert client("whatever").get(URL).status_code == 401
    key.refresh_from_db()
    assert key.request_count == 1 and key.last_used_at is not None


def test_key_usage_is_written_at_most_every_few_seconds_and_at_exit(monkeypatch):
    from crystallise.auth import USAGE

    key, secret = ApiKey.objects.create_key(name="lab")
    for _ in range(5):
        assert client(secret).get(URL).status_code == 200
    key.refresh_from_db()
    # The first request is written at once; the next four wait for the next write.
    assert key.request_count == 1
    first_seen = key.last_used_at
    USAGE.flush_all()  # what process exit does
    key.refresh_from_db()
    assert key.request_count == 5 and key.last_used_at > first_seen
    monkeypatch.setattr(USAGE, "FLUSH_SECONDS", 0.0)
    assert client(secret).get(URL).status_code == 200
    key.refresh_from_db()
    assert key.request_count == 6


def test_admin_key_is_stored_only_as_hash():
    key, secret = ApiKey.objects.create_key(name="lab")
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert secret not in str(row)
    assert secret.startswith(row["prefix"])


def test_revoked_admin_key_stops_working_at_once():
    key, secret = ApiKey.objects.create_key(name="lab")
    ApiKey.objects.create_key(name="other")
    assert client(secret).get(URL).status_code == 200
    key.revoke()
    response = client(secret).get(URL)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_revoking_the_only_key_does_not_reopen_dev_mode_for_that_key():
    key, secret = ApiKey.objects.create_key(name="lab")
    key.revoke()
    assert client(secret).get(URL).status_code == 401


def test_management_commands_create_and_revoke(capsys):
    call_command("create_api_key", "ops")
    secret = capsys.readouterr().out.strip()
    assert client(secret).get(URL).status_code == 200
    call_command("revoke_api_key", "ops")
    assert client(secret).get(URL).status_code == 401


def test_check_deploy_flags_dev_mode(settings):
    from crystallise.checks import dev_mode_check

    assert [w.id for w in dev_mode_check(None)] == ["crystallise.W001"]
    settings.CRYSTALLISE_API_KEYS = ["k"]
    assert dev_mode_check(None) == []


def test_schema_and_swagger_are_public():
    assert client().get("/v1/schema/").status_code == 200
    page = client().get("/v1/docs/")
    assert page.status_code == 200
    # Swagger UI comes from the service itself (works offline, pinned version), not from a CDN.
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "@latest" not in html


def test_env_key_list_ignores_spaces_and_empty_items():
    """`CRYSTALLISE_API_KEYS="k1, k2,"` means keys k1 and k2 (the header is stripped, so " k2" could never match)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "crystallise_site.settings.base", "DJANGO_DEBUG": "true",
           "CRYSTALLISE_API_KEYS": "key-one, key-two ,", "DJANGO_ALLOWED_HOSTS": "a.example, b.example"}
    code = ("import json, django; django.setup(); from django.conf import settings; "
            "print(json.dumps([settings.CRYSTALLISE_API_KEYS, settings.ALLOWED_HOSTS]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    keys, hosts = json.loads(out.stdout.strip().splitlines()[-1])
    assert keys == ["key-one", "key-two"]
    assert hosts == ["a.example", "b.example"]

"""The contract's error shape for every 4xx/5xx, including DRF's and Django's own."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_unknown_route_is_404_not_found_in_shape(api):
    response = api.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error_category"] == "not_found"


def test_unknown_route_outside_v1_is_json_404(anon):
    response = anon.get("/definitely/not/here")
    assert response.status_code == 404
    assert response.json()["error_category"] == "not_found"


def test_malformed_json_is_validation(api):
    response = api.post("/v1/screening/jobs", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error_category"] == "validation"


def test_wrong_method_is_405_validation(api):
    response = api.put("/v1/screening/jobs", data={}, format="json")
    assert response.status_code == 405
    assert response.json()["error_category"] == "validation"


def test_field_errors_carry_errors_map(api):
    response = api.post("/v1/screening/jobs", data={"criteria": {"inclusion": []}, "papers": []}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error_category"] == "validation"
    assert set(body["errors"]) >= {"criteria.inclusion", "papers"} or body["errors"]


def test_missing_object_is_404_in_shape(api):
    response = api.get("/v1/screening/jobs/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json()["error_category"] == "not_found"


def test_unsupported_media_type_is_validation(api):
    response = api.post("/v1/screening/jobs", data="x", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error_category"] == "validation"


def test_healthz_reports_database():
    from django.test import Client

    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_healthz_with_another_method_is_405_in_the_error_shape(method):
    from django.test import Client

    response = getattr(Client(enforce_csrf_checks=True), method)("/healthz")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    assert response.json()["error_category"] == "validation"


@pytest.mark.django_db
def test_a_query_the_database_cancels_is_a_503_that_says_busy_with_its_traceback_logged(caplog):
    # A real statement timeout from the server (SQLSTATE 57014), through the API's error handler.
    from django.db import OperationalError, connection, transaction

    from crystallise.api import exception_handler

    if connection.vendor != "postgresql":
        pytest.skip("statement timeouts are PostgreSQL's")
    with pytest.raises(OperationalError) as info, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 10")
        cursor.execute("SELECT pg_sleep(1)")

    class JobsView:
        pass

    response = exception_handler(info.value, {"view": JobsView()})
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.data["error_category"] == "internal" and "busy" in response.data["detail"]
    assert "57014" in caplog.text and "Traceback" in caplog.text
    # A lost connection stays one line, without a traceback.
    caplog.clear()
    response = exception_handler(OperationalError("server closed the connection unexpectedly"), {"view": JobsView()})
    assert response.status_code == 503 and "temporarily unavailable" in response.data["detail"]
    assert "Traceback" not in caplog.text

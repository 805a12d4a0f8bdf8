"""First login and static files: the `create_operator` command and the admin's static files served with DEBUG off."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from tests.admin_support import SCREENING

pytestmark = pytest.mark.django_db(transaction=True)


# --- first login and static files ---------------------------------------------


def test_create_operator_prints_a_random_password_once(capsys):
    call_command("create_operator", "ops")
    password = capsys.readouterr().out.strip()
    user = get_user_model().objects.get(username="ops")
    assert user.is_staff and user.is_superuser and user.check_password(password) and len(password) >= 20
    client = Client()
    assert client.login(username="ops", password=password)
    assert client.get(SCREENING).status_code == 200
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_operator", "ops")
    call_command("create_operator", "ops", "--reset-password")
    assert not get_user_model().objects.get(username="ops").check_password(password)


def test_create_operator_takes_the_password_from_the_environment(settings, capsys):
    settings.CRYSTALLISE_OPERATOR_PASSWORD = "correct-horse-battery-staple"
    call_command("create_operator", "ops")
    assert capsys.readouterr().out == ""
    assert get_user_model().objects.get(username="ops").check_password("correct-horse-battery-staple")
    settings.CRYSTALLISE_OPERATOR_PASSWORD = "123"
    with pytest.raises(CommandError, match="too weak"):
        call_command("create_operator", "ops2")


@pytest.mark.parametrize(("args", "message"), [
    (["", "--email", "ops@example.org"], "username"),
    (["bad name with spaces/"], "username"),
    (["u" * 200], "username"),
    (["ops", "--email", "not-an-email"], "email"),
])
def test_create_operator_refuses_what_the_admin_would_refuse(args, message):
    with pytest.raises(CommandError, match=f"Cannot create operator .*{message}"):
        call_command("create_operator", *args)
    assert not get_user_model().objects.exists()


def test_admin_static_files_are_served_by_whitenoise_with_debug_off(settings, tmp_path):
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path / "static"
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"}}
    call_command("collectstatic", "--noinput", verbosity=0)
    response = Client().get("/static/admin/css/base.css")  # a new client loads the middleware, which scans STATIC_ROOT
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"@import") or response["Content-Type"].startswith("text/css")
    assert Client().get("/static/admin/css/no-such-file.css").status_code == 404

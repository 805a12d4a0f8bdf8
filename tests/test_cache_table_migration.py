"""`migrate` alone prepares a database for workers: it creates the database cache table where django-q2
clusters keep their statistics (which /healthz counts as live workers)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder

from tests.factories import CRITERIA, papers
from tests.workers import ROOT, database_url, process_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = settings.CACHES["default"]["LOCATION"]
migration = importlib.import_module("crystallise.migrations.0005_cache_table")


@pytest.fixture
def fresh_database(tmp_path):
    """A database of its own, empty (PostgreSQL: created on the test's server; SQLite: a new file). Yields an
    open connection to it; dropped afterwards."""
    if connection.vendor == "sqlite":
        name = str(tmp_path / "fresh.sqlite3")
    else:
        name = f"{connection.settings_dict['NAME']}_fresh"
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cursor.execute(f"CREATE DATABASE {name}")
    fresh = type(connections["default"])({**connection.settings_dict, "NAME": name}, alias="fresh")
    yield fresh
    fresh.close()
    if connection.vendor != "sqlite":
        with connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrate_alone_lets_a_worker_start_without_errors(fresh_database, qcluster):
    url = database_url(fresh_database.settings_dict)
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                             env=process_env(database=url), capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert TABLE in fresh_database.introspection.table_names()

    cluster = qcluster(database=url, CRYSTALLISE_WORKERS=1)
    cluster.wait_until_running()

    def stats_stored() -> bool:
        with fresh_database.cursor() as cursor:
            cursor.execute(f"SELECT cache_key FROM {TABLE}")  # noqa: S608 - the configured table name
            return any(":cluster" in key for (key,) in cursor.fetchall())

    wait_for(stats_stored, 15, process=cluster.process, what="cluster statistics in the cache table",
             output=lambda: cluster.output)
    assert cluster.stop() == 0, cluster.output
    assert cluster.error_lines() == [], cluster.output


def test_the_test_database_got_the_cache_table_from_the_migration():
    """pytest-django builds the test database by migrating: the migration ran there, and the cache works."""
    from django.core.cache import cache

    applied = MigrationRecorder(connection).applied_migrations()
    assert ("crystallise", "0005_cache_table") in applied
    assert TABLE in connection.introspection.table_names()
    cache.set("probe", "value", 30)
    assert cache.get("probe") == "value"


def test_the_migration_skips_an_existing_table_and_its_reverse_drops_it():
    try:
        with connection.schema_editor() as editor:
            migration.create_cache_tables(None, editor)  # already there: left as it is
        assert TABLE in connection.introspection.table_names()
        with connection.schema_editor() as editor:
            migration.drop_cache_tables(None, editor)
        assert TABLE not in connection.introspection.table_names()
        with connection.schema_editor() as editor:
            migration.drop_cache_tables(None, editor)  # already gone: nothing to do
            migration.create_cache_tables(None, editor)
        assert TABLE in connection.introspection.table_names()
    finally:
        call_command("createcachetable", verbosity=0)  # whatever happened, later tests have their cache


def test_a_worker_on_the_test_database_reports_to_healthz_and_runs_a_job(api, fake_openai, qcluster):
    cluster = qcluster(fake=fake_openai, CRYSTALLISE_WORKERS=1)
    cluster.wait_until_running()
    wait_for(lambda: api.get("/healthz").json()["workers"] >= 1, 15, process=cluster.process,
             what="/healthz counting the worker", output=lambda: cluster.output)
    job_id = api.post("/v1/screening/jobs", {"criteria": CRITERIA, "papers": papers(3)}, format="json").json()["id"]

    def finished() -> bool:
        return api.get(f"/v1/screening/jobs/{job_id}").json()["status"] in ("completed", "failed", "cancelled")

    wait_for(finished, 30, process=cluster.process, what="the job to finish", output=lambda: cluster.output)
    body = api.get(f"/v1/screening/jobs/{job_id}").json()
    assert body["status"] == "completed" and body["progress"]["screened"] == 3, body
    assert fake_openai.count == 3
    assert cluster.error_lines() == [], cluster.output

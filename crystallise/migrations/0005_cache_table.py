"""The database cache table(s) of settings.CACHES, created by `migrate`.

django-q2 workers write their cluster statistics to the cache (so /healthz in
the web process can count live workers); without the table a worker logs an
error on every guard cycle. The table is not a model, so `migrate` would not
create it: this migration runs Django's own `createcachetable`, which skips
tables that already exist (databases set up before this migration, or the
test database, which Django's test runner also gives one).
"""

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.db import BaseDatabaseCache
from django.core.management import call_command
from django.db import migrations


def cache_tables() -> list[str]:
    return [caches[alias]._table for alias in settings.CACHES if isinstance(caches[alias], BaseDatabaseCache)]


def create_cache_tables(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


def drop_cache_tables(apps, schema_editor):
    connection = schema_editor.connection
    existing = set(connection.introspection.table_names())
    for table in cache_tables():
        if table in existing:
            schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(table)}")


class Migration(migrations.Migration):
    dependencies = [("crystallise", "0004_api_key_budget_not_negative")]
    operations = [migrations.RunPython(create_cache_tables, drop_cache_tables, elidable=False)]

"""Trigram indexes for the console's text search on PostgreSQL (console/web/search.py).

The search compares LOWER(column) LIKE '%word%' for the prompt, title and result: a GIN index with
pg_trgm's operator class on exactly those expressions answers it without reading the table. Built
CONCURRENTLY (outside a transaction), so running tasks keep writing during the upgrade. Other
databases get nothing (SQLite searches its own way).
"""

from django.db import migrations

FIELDS = ("input_text", "title", "result")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for field in FIELDS:
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS task_{field}_trgm "
            f"ON tasks_app_task USING gin (LOWER({field}) gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for field in FIELDS:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS task_{field}_trgm")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("tasks_app", "0008_workers")]

    operations = [migrations.RunPython(create, drop, elidable=False)]

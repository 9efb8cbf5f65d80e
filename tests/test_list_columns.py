"""List routes load only the columns they return, in a fixed number of queries."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasks_app.models import Task

# Columns a listing must never read: prompts, logs, metrics, secrets.
HEAVY = (
    "input_text",
    "input_files",
    "metrics",
    "payload_extension",
    "output_schema",
    "user_tokens_encrypted",
)


def selects_of(queries, table: str) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("SELECT") and f'FROM "{table}"' in q["sql"]]


def test_the_task_listing_reads_only_what_it_returns(alice, task_of, external_agent):
    for i in range(3):
        task_of(f"prompt {i}")
    Task.objects.update(metrics={"reports": [{"big": "x" * 1000}]})
    with CaptureQueriesContext(connection) as few:
        r = alice.get(f"/api/agent-execution/executions/history/{external_agent.id}")
    assert r.status_code == 200 and len(r.json()) == 3
    [listing] = selects_of(few.captured_queries, "tasks_app_task")
    for column in HEAVY:
        assert f'"tasks_app_task"."{column}"' not in listing, column
    for i in range(3, 8):
        task_of(f"prompt {i}")
    with CaptureQueriesContext(connection) as many:
        r = alice.get(f"/api/agent-execution/executions/history/{external_agent.id}")
    assert len(r.json()) == 8
    assert len(many.captured_queries) == len(few.captured_queries)  # no query per row


def test_the_users_task_listing_reads_only_what_it_returns(alice, task_of):
    task_of("hi", input={"text": "hi", "user": {"id": "u1", "email": "u1@example.com"}})
    with CaptureQueriesContext(connection) as queries:
        r = alice.get("/api/agent-execution/executions/history/user/u1")
    assert len(r.json()) == 1
    [listing] = selects_of(queries.captured_queries, "tasks_app_task")
    assert '"tasks_app_task"."input_text"' not in listing


def test_the_sdks_agent_listing_reads_only_what_it_returns(alice, external_agent):
    with CaptureQueriesContext(connection) as queries:
        r = alice.get("/api/agents/list")
    assert [a["id"] for a in r.json()] == [external_agent.id]
    [listing] = selects_of(queries.captured_queries, "console_agent")
    assert '"console_agent"."model_api_key_encrypted"' not in listing

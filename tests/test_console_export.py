"""/tasks/export.csv and /tasks/export.jsonl: the filtered history, streamed."""

from __future__ import annotations

import csv
import io
import json

import pytest
from asgiref.sync import async_to_sync

from tests.console_helpers import signed_in
from tests.test_console_history import agent, make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def body(response) -> str:
    assert response.streaming

    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(read)().decode()


def test_it_exports_the_filtered_set_as_csv(alice, charlie):
    writer = agent(alice.org, "Writer")
    done = make(
        alice, writer, "Write the REPORT", status="completed", result='=HYPERLINK("x")', internal="sent"
    )
    make(alice, writer, "something else", status="failed")
    make(charlie, agent(charlie.org, "Theirs"), "write the report too", status="completed")
    r = signed_in(alice).get("/tasks/export.csv?q=report&status=completed")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert r["Content-Disposition"].startswith('attachment; filename="tasks-')
    rows = list(csv.DictReader(io.StringIO(body(r))))
    assert [row["id"] for row in rows] == [done.id]
    row = rows[0]
    assert row["agent"] == "Writer" and row["status"] == "completed" and row["internal_status"] == "sent"
    assert row["prompt"] == "Write the REPORT" and row["created_by"] == "alice@example.com"
    assert row["result"] == '\'=HYPERLINK("x")'  # never a live formula in a spreadsheet
    assert {"total_tokens", "tools_used", "tool_calls", "duration", "turns", "user_email"} <= set(row)


def test_it_exports_jsonl_in_the_same_order_as_the_page(alice, settings):
    settings.CONSOLE_PAGE_SIZE = 2
    writer = agent(alice.org, "Writer")
    made = [make(alice, writer, f"task {i}") for i in range(5)]
    from console.web import export

    export.PAGE, before = 2, export.PAGE  # several pages of the stream, not one
    try:
        r = signed_in(alice).get("/tasks/export.jsonl")
        lines = [json.loads(line) for line in body(r).splitlines()]
    finally:
        export.PAGE = before
    assert [x["id"] for x in lines] == [t.id for t in reversed(made)]
    assert lines[0]["total_tokens"] == 0 and lines[0]["tools_used"] == [] and lines[0]["status"] == "pending"


def test_a_viewer_may_export_and_a_bad_filter_is_a_400(vera, alice):
    make(alice, agent(alice.org, "Writer"), "hello")
    client = signed_in(vera)
    assert client.get("/tasks/export.csv").status_code == 200
    r = client.get("/tasks/export.jsonl?status=nope")
    assert r.status_code == 400 and b"status" in r.content


def test_signed_out_is_sent_to_sign_in(db):
    from django.test import Client

    r = Client().get("/tasks/export.csv")
    assert r.status_code == 302 and r["Location"].startswith("/?next=")

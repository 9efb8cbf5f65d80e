"""/audit/: admins read the log, filtered by actor, action, object and date, and export it."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache

from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


def body(response) -> str:
    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(read)().decode()


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def test_it_shows_who_did_what_with_before_and_after(alice):
    agent_id = alice.post("/api/v1/agents", {"name": "Scout", "model_name": "m1"}).json()["id"]
    alice.patch(f"/api/v1/agents/{agent_id}", {"model_name": "m2", "model_api_key": "sk-hidden-value"})
    html = signed_in(alice).get("/audit/").content.decode()
    assert "Agent edited" in html and "Agent created" in html and "Signed in" in html
    assert "<del>m1</del> → m2" in html
    assert "sk-hidden-value" not in html
    assert "alice@example.com · key atc_" in html


def test_it_filters_by_action_actor_object_and_date(alice):
    alice.post("/api/v1/agents", {"name": "Scout"})
    client = signed_in(alice)
    only_agents = client.get("/audit/?action=agent").content.decode()
    assert 'data-action="agent.created"' in only_agents
    assert 'data-action="signin.succeeded"' not in only_agents
    assert "No entries match" in client.get("/audit/?actor=nobody").content.decode()
    assert 'data-action="agent.created"' in client.get("/audit/?object=Scout").content.decode()
    assert "No entries match" in client.get("/audit/?since=2099-01-01").content.decode()
    r = client.get("/audit/?since=not-a-date")
    assert r.status_code == 400 and 'id="id_since_error"' in r.content.decode()


def test_it_exports_csv_and_jsonl(alice):
    alice.post("/api/v1/agents", {"name": "=Scout"})
    client = signed_in(alice)
    csv = body(client.get("/audit/export.csv?action=agent"))
    assert csv.splitlines()[0].startswith("id,created_at,actor")
    assert "'=Scout" in csv  # a formula-like cell stays text
    lines = body(client.get("/audit/export.jsonl")).splitlines()
    assert {json.loads(line)["action"] for line in lines} == {"agent.created", "signin.succeeded"}


def test_members_and_viewers_cannot_read_it(bob, vera):
    assert signed_in(bob).get("/audit/").status_code == 403
    assert signed_in(vera).get("/audit/export.csv").status_code == 403


def test_charlie_from_another_org_never_sees_alices_entries(alice, charlie):
    alice.post("/api/v1/agents", {"name": "Scout"})
    client = signed_in(charlie)
    html = client.get("/audit/").content.decode()
    assert "Scout" not in html and "alice@example.com" not in html
    jsonl = body(client.get("/audit/export.jsonl"))
    assert "Scout" not in jsonl

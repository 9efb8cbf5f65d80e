"""The audit log: every change through the API or the console is recorded once, with its actor,
address and before/after, in the change's transaction; never a secret; entries cannot be changed."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import Client

from console import audit
from console.models import AuditEvent
from tests.console_helpers import PASSWORD

pytestmark = pytest.mark.django_db


def entries(org, action: str | None = None) -> list[AuditEvent]:
    rows = AuditEvent.objects.filter(organization=org).order_by("id")
    return list(rows.filter(action=action) if action else rows)


def test_it_records_an_agent_created_over_rest_with_its_actor_and_address(alice):
    r = alice.client.post(
        "/api/v1/agents",
        json.dumps({"name": "Scout", "model_api_key": "sk-top-secret-1"}),
        content_type="application/json",
        headers={"x-api-key": alice.key},
        REMOTE_ADDR="127.0.0.9",
    )
    assert r.status_code == 201
    [entry] = entries(alice.org, "agent.created")
    assert entry.actor_label == f"alice@example.com · key {alice.key[:8]}…{alice.key[-4:]}"
    assert entry.actor_key_id is not None and entry.actor_user_id == alice.member.user_id
    assert entry.address == "127.0.0.9"
    assert (
        entry.object_type == "agent" and entry.object_id == r.json()["id"] and entry.object_label == "Scout"
    )
    assert entry.changes["name"] == {"from": None, "to": "Scout"}
    assert entry.changes["model_api_key"] == {"changed": True}


def test_it_records_which_fields_an_edit_changed_and_secrets_only_as_changed(alice):
    agent_id = alice.post("/api/v1/agents", {"name": "Scout", "model_name": "m1"}).json()["id"]
    r = alice.patch(
        f"/api/v1/agents/{agent_id}",
        {
            "model_name": "m2",
            "model_api_key": "sk-top-secret-2",
            "graph": [
                {
                    "id": "docs",
                    "type": "mcp",
                    "settings": {
                        "mcp_settings": {
                            "url": "http://127.0.0.1:9/mcp",
                            "auth_type": "api_key",
                            "api_key": "mcp-secret-3",
                        }
                    },
                }
            ],
        },
    )
    assert r.status_code == 200, r.content
    [entry] = entries(alice.org, "agent.updated")
    assert entry.changes["model_name"] == {"from": "m1", "to": "m2"}
    assert entry.changes["model_api_key"] == {"changed": True}
    assert entry.changes["graph_secrets"] == {"changed": True}
    assert entry.changes["graph"]["to"][0]["url"] == "http://127.0.0.1:9/mcp"
    assert set(entry.changes) == {"model_name", "model_api_key", "graph", "graph_secrets"}
    stored = str(list(AuditEvent.objects.values_list("changes", flat=True)))
    assert "sk-top-secret" not in stored and "mcp-secret" not in stored


def test_it_records_an_agent_deleted(alice):
    agent_id = alice.post("/api/v1/agents", {"name": "Scout"}).json()["id"]
    assert alice.delete(f"/api/v1/agents/{agent_id}").status_code == 204
    [entry] = entries(alice.org, "agent.deleted")
    assert entry.object_id == agent_id and entry.changes["name"] == {"from": "Scout", "to": None}


def test_it_writes_nothing_when_the_change_is_refused(alice, vera):
    assert vera.post("/api/v1/agents", {"name": "Nope"}).status_code == 403
    alice.post("/api/v1/agents", {"name": "Scout", "unique_name": "scout"})
    assert alice.post("/api/v1/agents", {"name": "Scout", "unique_name": "scout"}).status_code == 409
    assert len(entries(alice.org, "agent.created")) == 1


def test_it_records_a_task_stopped_and_updated_by_a_caller(alice, bob, task_of):
    task = task_of()
    assert (
        bob.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "triage"}).status_code
        == 200
    )
    assert alice.delete(f"/api/agent-execution/{task['id']}").status_code == 200
    [updated] = entries(alice.org, "task.updated")
    assert updated.actor_label.startswith("bob@example.com · key atc_")
    assert updated.actor_user_id == bob.member.user_id
    assert updated.changes == {"internal_status": {"from": None, "to": "triage"}}
    [stopped] = entries(alice.org, "task.stopped")
    assert stopped.object_id == task["id"] and stopped.actor_user_id == alice.member.user_id


def test_it_records_no_update_that_changed_nothing(bob, task_of):
    task = task_of()
    bob.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "triage"})
    bob.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "triage"})
    assert len(entries(bob.org, "task.updated")) == 1


def test_it_records_sign_ins_and_failed_sign_ins(alice, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    user = alice.member.user
    user.set_password(PASSWORD)
    user.save()
    Client(REMOTE_ADDR="127.0.0.5").post("/", {"email": user.email, "password": "wrong"})
    Client().post("/", {"email": user.email, "password": PASSWORD})
    failed = entries(alice.org, "signin.failed")
    assert [(e.actor_label, e.address) for e in failed] == [("alice@example.com", "127.0.0.5")]
    assert len(entries(alice.org, "signin.succeeded")) == 1
    assert "wrong" not in str(list(AuditEvent.objects.values()))


def test_it_refuses_to_edit_or_delete_an_entry(alice):
    alice.post("/api/v1/agents", {"name": "Scout"})
    entry = entries(alice.org)[0]
    entry.action = "agent.deleted"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="x")
    assert AuditEvent.objects.get(pk=entry.pk).action == "agent.created"


def test_it_keeps_entries_when_the_actor_leaves(alice):
    alice.post("/api/v1/agents", {"name": "Scout"})
    alice.member.user.delete()
    [entry] = entries(alice.org, "agent.created")
    assert entry.actor_user_id is None and entry.actor_key_id is None
    assert entry.actor_label.startswith("alice@example.com")


def test_it_lists_entries_over_rest_for_a_service_key_only(alice, bob, charlie):
    alice.post("/api/v1/agents", {"name": "Scout"})
    charlie.post("/api/v1/agents", {"name": "Theirs"})
    r = alice.get("/api/v1/audit?action=agent")
    assert r.status_code == 200
    assert [e["object_label"] for e in r.json()] == ["Scout"]
    assert r.json()[0]["actor"].startswith("alice@example.com · key atc_")
    assert bob.get("/api/v1/audit").status_code == 403
    assert alice.get("/api/v1/audit?since=yesterday").status_code == 400


def test_the_diff_hides_secrets_and_keeps_plain_values():
    changes = audit.diff({"a": 1, "k": "old"}, {"a": 2, "k": "new", "b": None}, secret={"k"})
    assert changes == {"a": {"from": 1, "to": 2}, "k": {"changed": True}}
    assert audit.diff({"d": "", "g": {}}, {"d": None, "g": None, "n": 0}) == {"n": {"from": None, "to": 0}}

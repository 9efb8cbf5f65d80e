"""POST /api/agent-execution/{agent_id}: creating tasks."""

from __future__ import annotations

from django.test import override_settings

from tasks_app.models import ActivityEntry, Task, TaskEvent
from tests.conftest import create_body


def test_it_creates_a_pending_task_with_the_wire_shape(alice, external_agent):
    body = create_body(
        "Summarise the report",
        input={
            "text": "Summarise the report",
            "files": ["https://example.com/a.csv"],
            "user": {
                "id": "u1",
                "email": "u1@example.com",
                "first_name": "Uma",
                "last_name": None,
                "additional_attributes": None,
                "timezone": None,
            },
        },
        title="Report",
    )
    r = alice.post(f"/api/agent-execution/{external_agent.id}", body)
    assert r.status_code == 200
    assert r["Content-Type"].startswith("application/json")
    task = r.json()
    assert task["status"] == "pending"
    assert task["agent_id"] == external_agent.id
    assert task["organization_id"] == alice.org.id
    assert task["input"]["files"] == ["https://example.com/a.csv"]
    assert task["input"]["user"]["email"] == "u1@example.com"
    assert task["events_streaming"] is True
    assert task["title"] == "Report"
    assert task["created_at"].endswith("Z")
    assert "configuration" not in task
    assert all(task[k] in (True, False) for k in ("is_manually_stopped", "background_auth_eligible"))
    row = Task.objects.get(pk=task["id"])
    assert row.user_id == "u1"
    assert [e.type for e in TaskEvent.objects.filter(task=row)] == ["task_created"]
    first = ActivityEntry.objects.get(task=row)
    assert first.data["role"] == "user" and first.data["content"]["text"] == "Summarise the report"


def test_it_works_with_the_org_segment_and_double_slashes(alice, external_agent):
    r = alice.post(f"/api/{alice.org.id}/agent-execution/{external_agent.id}", create_body())
    assert r.status_code == 200
    r = alice.get(f"/api//{alice.org.id}//agent-execution/{r.json()['id']}/status")
    assert r.status_code == 200


def test_a_teammate_can_create_and_read(bob, alice, external_agent):
    r = bob.post(f"/api/agent-execution/{external_agent.id}", create_body())
    assert r.status_code == 200
    assert alice.get(f"/api/agent-execution/{r.json()['id']}/status").status_code == 200


def test_a_viewer_cannot_create(vera, external_agent):
    r = vera.post(f"/api/agent-execution/{external_agent.id}", create_body())
    assert r.status_code == 403
    assert "viewer" in r.json()["detail"]
    assert not Task.objects.exists()


def test_it_rejects_another_organizations_agent(charlie, external_agent):
    r = charlie.post(f"/api/agent-execution/{external_agent.id}", create_body())
    assert r.status_code == 404
    assert not Task.objects.exists()


def test_it_rejects_the_wrong_org_segment(alice, charlie, external_agent):
    r = alice.post(f"/api/{charlie.org.id}/agent-execution/{external_agent.id}", create_body())
    assert r.status_code == 404


def test_it_rejects_unknown_agents(alice):
    r = alice.post("/api/agent-execution/nope", create_body())
    assert r.status_code == 404
    assert r.json()["detail"] == "Agent nope not found"


def test_it_rejects_malformed_json(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", raw=b"{not json")
    assert r.status_code == 400
    assert "Malformed JSON" in r.json()["detail"]


def test_it_names_the_wrong_field(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body(events_streaming="maybe"))
    assert r.status_code == 422
    assert r.json()["field"] == "events_streaming"
    r = alice.post(
        f"/api/agent-execution/{external_agent.id}", create_body(input={"text": "x", "files": ["ftp://a"]})
    )
    assert r.status_code == 422
    assert r.json()["field"] == "input.files"
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body(output_format="pdf"))
    assert r.status_code == 422 and r.json()["field"] == "output_format"
    r = alice.post(f"/api/agent-execution/{external_agent.id}", [1, 2])
    assert r.status_code == 422
    assert not Task.objects.exists()


@override_settings(TASK_PROMPT_MAX_CHARS=100)
def test_it_rejects_a_prompt_over_the_limit(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body("x" * 101))
    assert r.status_code == 413
    assert r.json()["limit"] == 100
    assert not Task.objects.exists()


def test_it_requires_an_api_key(alice, external_agent):
    r = alice.client.post(
        f"/api/agent-execution/{external_agent.id}", data="{}", content_type="application/json"
    )
    assert r.status_code == 401
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body(), **{"x-api-key": "atc_wrong"})
    assert r.status_code == 401


def test_it_rejects_a_revoked_key(alice, external_agent):
    alice.member.api_keys.get().revoke()
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body())
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]

"""No organization can see or touch another's agents and tasks: charlie (org B) against alice's (org A).

Another organization's rows answer exactly like rows that do not exist: 404 with the same message.
"""

from __future__ import annotations

import pytest

from console.models import Agent, GraphItem
from tasks_app.models import ActivityEntry, Task, TaskEvent
from tests.conftest import create_body


@pytest.fixture
def task(task_of) -> dict:
    return task_of(
        "alice's secret plan", input={"text": "plan", "files": [], "user": {"id": "u1", "email": "u1@a.test"}}
    )


def snapshot(task_id: str) -> tuple:
    row = Task.objects.get(pk=task_id)
    return (
        row.status,
        row.result,
        row.internal_status,
        row.stop_requested_at,
        TaskEvent.objects.filter(task_id=task_id).count(),
        ActivityEntry.objects.filter(task_id=task_id).count(),
    )


def assert_not_found(r, what: str) -> None:
    assert r.status_code == 404
    assert r.json()["detail"] == f"{what} not found"


def test_charlie_cannot_create_a_task_for_alices_agent(charlie, external_agent):
    r = charlie.post(f"/api/agent-execution/{external_agent.id}", create_body())
    assert_not_found(r, f"Agent {external_agent.id}")
    assert not Task.objects.exists()


def test_charlie_cannot_continue_alices_task(charlie, task):
    own = charlie.post("/api/v1/agents", {"name": "Mine", "framework": "external"}).json()
    before = snapshot(task["id"])
    r = charlie.post(f"/api/agent-execution/{own['id']}", create_body("hijack", id=task["id"]))
    assert r.status_code == 404
    assert snapshot(task["id"]) == before
    assert Task.objects.count() == 1


def test_charlie_cannot_read_alices_task(charlie, task):
    assert_not_found(charlie.get(f"/api/agent-execution/{task['id']}/status"), f"Task {task['id']}")


def test_charlie_cannot_update_alices_task(charlie, task):
    before = snapshot(task["id"])
    r = charlie.patch(
        f"/api/agent-execution/{task['id']}/update",
        {"status": "completed", "result": "pwned", "internal_status": "x"},
    )
    assert_not_found(r, f"Task {task['id']}")
    assert snapshot(task["id"]) == before


def test_charlie_cannot_stop_alices_task(charlie, task):
    before = snapshot(task["id"])
    assert_not_found(charlie.delete(f"/api/agent-execution/{task['id']}"), f"Task {task['id']}")
    assert snapshot(task["id"]) == before


def test_charlie_cannot_push_events_to_alices_task(charlie, task):
    before = snapshot(task["id"])
    r = charlie.post(f"/api/agent-execution/{task['id']}/events/push", [{"type": "chunk", "data": "x"}])
    assert_not_found(r, f"Task {task['id']}")
    assert snapshot(task["id"]) == before


def test_charlie_cannot_list_alices_agents_tasks(charlie, task, external_agent):
    r = charlie.get(f"/api/agent-execution/executions/history/{external_agent.id}")
    assert_not_found(r, f"Agent {external_agent.id}")


def test_charlie_does_not_see_alices_tasks_of_the_same_user_id(charlie, task):
    r = charlie.get("/api/agent-execution/executions/history/user/u1")
    assert r.status_code == 200
    assert r.json() == []


def test_charlie_cannot_read_alices_activity(charlie, task, external_agent):
    r = charlie.get(f"/api/activity/{external_agent.id}/{task['id']}")
    assert_not_found(r, f"Task {task['id']}")


def test_charlie_cannot_stream_alices_task(charlie, task):
    r = charlie.get(f"/api/agent-execution/{task['id']}/events")
    assert r.status_code == 404
    assert r["Content-Type"].startswith("application/json")
    assert r.json()["detail"] == f"Task {task['id']} not found"
    r = charlie.get(f"/api/{charlie.org.id}/agent-execution/{task['id']}/events")
    assert r.status_code == 404


def test_charlie_cannot_use_alices_organization_segment(charlie, alice, task):
    r = charlie.get(f"/api/{alice.org.id}/agent-execution/{task['id']}/status")
    assert_not_found(r, f"Organization {alice.org.id}")
    r = charlie.get(f"/api/{alice.org.id}/agent-execution/{task['id']}/events")
    assert r.status_code == 404


def test_charlie_cannot_read_alices_agent_the_sdk_way(charlie, external_agent):
    assert_not_found(charlie.get(f"/api/agents/{external_agent.id}"), f"Agent {external_agent.id}")


def test_charlie_does_not_list_alices_agents(charlie, external_agent):
    assert charlie.get("/api/agents/list").json() == []
    assert charlie.get("/api/v1/agents").json() == []


def test_charlie_cannot_read_alices_agent_config(charlie, external_agent):
    assert_not_found(charlie.get(f"/api/v1/agents/{external_agent.id}"), f"Agent {external_agent.id}")


def test_charlie_cannot_change_alices_agent(charlie, external_agent):
    r = charlie.patch(f"/api/v1/agents/{external_agent.id}", {"name": "Mine now", "model_api_key": "sk-x"})
    assert_not_found(r, f"Agent {external_agent.id}")
    external_agent.refresh_from_db()
    assert external_agent.name == "Worker" and not external_agent.has_model_api_key


def test_charlie_cannot_delete_alices_agent(charlie, external_agent):
    assert_not_found(charlie.delete(f"/api/v1/agents/{external_agent.id}"), f"Agent {external_agent.id}")
    assert Agent.objects.filter(pk=external_agent.id).exists()


def test_charlie_cannot_put_alices_agent_in_his_graph(charlie, external_agent):
    r = charlie.post(
        "/api/v1/agents", {"name": "Lead", "graph": [{"type": "agent", "item_id": external_agent.id}]}
    )
    assert r.status_code == 422
    assert r.json()["field"] == "graph[0].item_id"
    assert not GraphItem.objects.exists()

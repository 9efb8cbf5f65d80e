"""DELETE /api/agent-execution/{task_id}: Tasks.stop / task.stop()."""

from __future__ import annotations

import pytest
from django.test import override_settings

from console.models import Agent
from tasks_app import actions
from tasks_app.actions import SYSTEM, Actor
from tasks_app.models import Task, TaskEvent
from tasks_app.schemas import TaskCreateIn
from tests.conftest import create_body


def stop(persona, task_id: str):
    return persona.delete(f"/api/agent-execution/{task_id}")


def event_types(task_id: str) -> list[str]:
    return list(TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list("type", flat=True))


def test_it_stops_a_pending_task(alice, task_of):
    task = task_of()
    r = stop(alice, task["id"])
    assert r.status_code == 200
    assert r["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "stopped"
    assert body["is_manually_stopped"] is True
    assert body["result"] == "Stopped by request"
    assert body["finished_at"] is not None
    row = Task.objects.get(pk=task["id"])
    assert row.status == "stopped" and row.stop_requested_at is not None
    assert event_types(task["id"]) == ["task_created", "task_updated", "task_finished"]


def test_it_stops_an_executing_external_task_at_once(bob, alice, task_of):
    task = task_of()
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "executing", "result": "partial"})
    r = stop(bob, task["id"])
    assert r.status_code == 200
    assert r.json()["status"] == "stopped"
    assert r.json()["result"] == "partial"


def test_it_refuses_to_stop_a_finished_task(alice, task_of):
    task = task_of()
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": "R"})
    before = event_types(task["id"])
    r = stop(alice, task["id"])
    assert r.status_code == 409
    assert r.json()["status"] == "completed"
    assert r.json()["detail"] == f"Task {task['id']} is already completed"
    row = Task.objects.get(pk=task["id"])
    assert (row.status, row.result, row.is_manually_stopped) == ("completed", "R", False)
    assert event_types(task["id"]) == before


def test_a_second_stop_is_a_conflict(alice, task_of):
    task = task_of()
    assert stop(alice, task["id"]).status_code == 200
    r = stop(alice, task["id"])
    assert r.status_code == 409
    assert r.json()["status"] == "stopped"
    assert event_types(task["id"]).count("task_finished") == 1


def test_it_stops_the_sub_tasks(alice, task_of, external_agent):
    task = task_of()
    parent = Task.objects.get(pk=task["id"])
    child = actions.create_task(
        Actor(alice.org.id, SYSTEM), external_agent.id, TaskCreateIn(input={"text": "sub"}), parent=parent
    )
    r = stop(alice, task["id"])
    assert r.status_code == 200
    assert r.json()["sub_executions"] == [child.id]
    child.refresh_from_db()
    assert child.status == "stopped" and child.is_manually_stopped


@pytest.mark.django_db(transaction=True)  # the wait reads on the followers' threads: committed rows only
@override_settings(STOP_WAIT_SECONDS=0.2)
def test_it_finishes_the_stop_when_the_worker_does_not_confirm(alice):
    r = alice.post("/api/v1/agents", {"name": "Built in", "framework": "builtin"})
    agent = Agent.objects.get(pk=r.json()["id"])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body()).json()
    assert actions.claim_task(task["id"], "worker-gone", lease_seconds=60) is not None
    r = stop(alice, task["id"])
    assert r.status_code == 200
    assert r.json()["status"] == "stopped"
    assert "did not confirm" in r.json()["result"]
    assert Task.objects.get(pk=task["id"]).status == "stopped"


def test_it_rejects_unknown_tasks(alice):
    r = stop(alice, "no-such-task")
    assert r.status_code == 404
    assert r.json()["detail"] == "Task no-such-task not found"


def test_a_viewer_cannot_stop(vera, task_of):
    task = task_of()
    r = stop(vera, task["id"])
    assert r.status_code == 403
    assert Task.objects.get(pk=task["id"]).status == "pending"


def test_it_requires_an_api_key(alice, task_of):
    task = task_of()
    r = alice.client.delete(f"/api/agent-execution/{task['id']}")
    assert r.status_code == 401
    assert Task.objects.get(pk=task["id"]).status == "pending"

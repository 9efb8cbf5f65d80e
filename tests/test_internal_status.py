"""The custom internal status: set with task.internal_status = ...; task.save(), up to 255 characters."""

from __future__ import annotations

from tasks_app.models import Task, TaskEvent
from tests.test_update_task import sdk_dump


def update(persona, task_id: str, body):
    return persona.patch(f"/api/agent-execution/{task_id}/update", body)


def test_it_stores_and_echoes_the_internal_status_from_save(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], sdk_dump(task, internal_status="awaiting review"))
    assert r.status_code == 200
    assert r.json()["internal_status"] == "awaiting review"
    assert r.json()["status"] == "pending"
    assert Task.objects.get(pk=task["id"]).internal_status == "awaiting review"
    got = alice.get(f"/api/agent-execution/{task['id']}/status").json()
    assert got["internal_status"] == "awaiting review"
    updated = TaskEvent.objects.filter(task_id=task["id"], type="task_updated").last()
    assert updated.data["internal_status"] == "awaiting review"


def test_it_accepts_the_internal_status_in_a_sparse_update(bob, task_of):
    task = task_of()
    r = update(bob, task["id"], {"internal_status": "triaged"})
    assert r.status_code == 200
    assert r.json()["internal_status"] == "triaged"


def test_it_can_be_set_on_a_finished_task(alice, task_of):
    task = task_of()
    update(alice, task["id"], {"status": "completed", "result": "R"})
    r = update(alice, task["id"], {"internal_status": "sent to customer"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["internal_status"]) == ("completed", "sent to customer")
    finished = sdk_dump(r.json(), internal_status="archived")
    r = update(alice, task["id"], finished)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["internal_status"]) == ("completed", "archived")


def test_it_can_be_cleared(alice, task_of):
    task = task_of()
    update(alice, task["id"], {"internal_status": "triaged"})
    r = update(alice, task["id"], {"internal_status": None})
    assert r.status_code == 200
    assert r.json()["internal_status"] is None
    assert Task.objects.get(pk=task["id"]).internal_status is None


def test_it_accepts_255_characters(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], {"internal_status": "x" * 255})
    assert r.status_code == 200
    assert Task.objects.get(pk=task["id"]).internal_status == "x" * 255


def test_it_rejects_more_than_255_characters_and_writes_nothing(alice, task_of):
    task = task_of()
    update(alice, task["id"], {"internal_status": "before"})
    events_before = TaskEvent.objects.filter(task_id=task["id"]).count()
    r = update(alice, task["id"], sdk_dump(task, status="completed", result="R", internal_status="y" * 256))
    assert r.status_code == 422
    assert r.json()["field"] == "internal_status"
    assert "255" in r.json()["detail"]
    row = Task.objects.get(pk=task["id"])
    assert (row.internal_status, row.status, row.result) == ("before", "pending", None)
    assert TaskEvent.objects.filter(task_id=task["id"]).count() == events_before


def test_it_is_a_list_filter(alice, task_of, external_agent):
    first, second = task_of("one"), task_of("two")
    update(alice, first["id"], {"internal_status": "awaiting review"})
    update(alice, second["id"], {"internal_status": "done"})
    r = alice.get(f"/api/agent-execution/executions/history/{external_agent.id}")
    assert {t["id"] for t in r.json()} == {first["id"], second["id"]}
    r = alice.get(
        f"/api/agent-execution/executions/history/{external_agent.id}?internal_status=awaiting+review"
    )
    assert [t["id"] for t in r.json()] == [first["id"]]
    assert r.json()[0]["internal_status"] == "awaiting review"


def test_a_viewer_cannot_set_it(vera, task_of):
    task = task_of()
    r = update(vera, task["id"], {"internal_status": "mine"})
    assert r.status_code == 403
    assert Task.objects.get(pk=task["id"]).internal_status is None

"""POST /api/agent-execution/{task_id}/events/push: an external worker's events."""

from __future__ import annotations

from tasks_app.models import ActivityEntry, TaskEvent


def push(persona, task_id: str, body, **kw):
    return persona.post(f"/api/agent-execution/{task_id}/events/push", body, **kw)


def stored(task_id: str) -> list[tuple[int, str, object]]:
    return list(TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list("seq", "type", "data"))


def test_it_appends_events_with_the_next_seqs(alice, task_of):
    task = task_of()
    r = push(alice, task["id"], [{"type": "chunk", "data": "Hel"}, {"type": "chunk", "data": "lo"}])
    assert r.status_code == 200
    assert r.json() == {"accepted": 2, "last_seq": 3}
    assert stored(task["id"])[1:] == [(2, "chunk", "Hel"), (3, "chunk", "lo")]
    r = push(alice, task["id"], {"type": "tool_call_request", "data": {"request_id": "r1", "tool_name": "t"}})
    assert r.json() == {"accepted": 1, "last_seq": 4}
    assert stored(task["id"])[-1] == (4, "tool_call_request", {"request_id": "r1", "tool_name": "t"})


def test_a_teammate_can_push(bob, task_of):
    task = task_of()
    r = push(bob, task["id"], [{"type": "think", "data": "hmm"}])
    assert r.status_code == 200
    assert ActivityEntry.objects.filter(task_id=task["id"], kind="reasoning").count() == 1


def test_an_event_without_data_is_stored_with_null(alice, task_of):
    task = task_of()
    r = push(alice, task["id"], [{"type": "process_update"}])
    assert r.status_code == 200
    assert stored(task["id"])[-1] == (2, "process_update", None)


def test_it_accepts_the_auth_event_the_sdk_pushes(alice, task_of):
    task = task_of()
    r = push(
        alice,
        task["id"],
        {"type": "auth_event", "data": {"type": "token_ready", "data": {"access_token": "tok-abcdef"}}},
    )
    assert r.status_code == 200
    assert stored(task["id"])[-1][2] == {"type": "token_ready", "data": {"access_token": "REDACTED"}}


def test_it_refuses_lifecycle_events_and_writes_none_of_the_batch(alice, task_of):
    task = task_of()
    r = push(alice, task["id"], [{"type": "chunk", "data": "ok"}, {"type": "task_finished", "data": {}}])
    assert r.status_code == 422
    assert r.json()["field"] == "[1].type"
    assert "task_finished" in r.json()["detail"]
    assert [t for _, t, _ in stored(task["id"])] == ["task_created"]


def test_it_names_the_event_with_a_missing_type(alice, task_of):
    task = task_of()
    r = push(alice, task["id"], [{"type": "chunk", "data": "a"}, {"data": "no type"}])
    assert r.status_code == 422
    assert r.json()["field"] == "[1].type"
    r = push(alice, task["id"], [{"type": 5}])
    assert r.status_code == 422
    assert r.json()["field"] == "[0].type"
    r = push(alice, task["id"], ["chunk"])
    assert r.status_code == 422
    assert r.json()["field"] == "[0]"
    assert len(stored(task["id"])) == 1


def test_it_rejects_malformed_json(alice, task_of):
    task = task_of()
    r = push(alice, task["id"], None, raw=b'[{"type": "chunk"')
    assert r.status_code == 400
    assert "Malformed JSON" in r.json()["detail"]


def test_it_limits_the_batch_size(alice, task_of):
    task = task_of()
    r = push(alice, task["id"], [{"type": "chunk", "data": "x"}] * 501)
    assert r.status_code == 422
    assert "500" in r.json()["detail"]
    assert len(stored(task["id"])) == 1


def test_it_rejects_unknown_tasks(alice):
    r = push(alice, "no-such-task", [{"type": "chunk", "data": "x"}])
    assert r.status_code == 404
    assert r.json()["detail"] == "Task no-such-task not found"


def test_a_viewer_cannot_push(vera, task_of):
    task = task_of()
    r = push(vera, task["id"], [{"type": "chunk", "data": "x"}])
    assert r.status_code == 403
    assert len(stored(task["id"])) == 1


def test_it_requires_an_api_key(alice, task_of):
    task = task_of()
    r = alice.client.post(
        f"/api/agent-execution/{task['id']}/events/push", data="[]", content_type="application/json"
    )
    assert r.status_code == 401


def test_it_refuses_events_for_a_finished_task_and_takes_any_thought(alice, task_of):
    task = task_of()
    r = alice.post(
        f"/api/agent-execution/{task['id']}/events/push", [{"type": "think", "data": ["a", "list"]}]
    )
    assert r.status_code == 200
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": "ok"})
    r = alice.post(f"/api/agent-execution/{task['id']}/events/push", [{"type": "chunk", "data": "late"}])
    assert r.status_code == 409 and r.json()["status"] == "completed"


def test_a_push_mirrors_its_activity_in_order_with_one_write_per_log(alice, task_of):
    """A batch with several activity-bearing events: entries in the events' order at the next
    positions, both counters right, one INSERT per log and one UPDATE of the task for the batch."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasks_app.models import Task

    task = task_of()
    call = {"request_id": "r1", "tool_call_id": "c1", "tool_name": "lookup", "payload": {"q": 1}}
    batch = [
        {"type": "think", "data": {"thought": "first", "title": "Plan"}},
        {"type": "chunk", "data": "text "},
        {"type": "tool_call_request", "data": call},
        {"type": "tool_call_result", "data": {**call, "result": {"rows": 1}, "is_error": False}},
        {"type": "chunk", "data": "more"},
    ]
    with CaptureQueriesContext(connection) as ctx:
        r = push(alice, task["id"], batch)
    assert r.json() == {"accepted": 5, "last_seq": 6}
    sql = [q["sql"] for q in ctx.captured_queries]
    assert len([s for s in sql if s.startswith('INSERT INTO "tasks_app_activityentry"')]) == 1, sql
    assert len([s for s in sql if s.startswith('INSERT INTO "tasks_app_taskevent"')]) == 1, sql
    assert len([s for s in sql if s.startswith('UPDATE "tasks_app_task"')]) == 1, sql
    entries = list(ActivityEntry.objects.filter(task_id=task["id"]).order_by("position"))
    assert [e.position for e in entries] == [1, 2, 3]  # 1: the user's message of the create
    assert [e.kind for e in entries[1:]] == ["reasoning", "tool_call"]  # a call's result is its entry
    assert entries[1].data["thought"] == "first"
    row = Task.objects.get(pk=task["id"])
    assert entries[2].data["result"] == {"rows": 1}
    assert (row.last_seq, row.last_activity) == (6, 3)
    again = push(alice, task["id"], [{"type": "analyze", "data": "next"}])
    assert again.json() == {"accepted": 1, "last_seq": 7}
    assert list(
        ActivityEntry.objects.filter(task_id=task["id"])
        .values_list("position", flat=True)
        .order_by("position")
    ) == [1, 2, 3, 4]

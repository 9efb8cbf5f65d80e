"""PATCH /api/agent-execution/{task_id}/update: Tasks.update (sparse) and task.save() (full dump)."""

from __future__ import annotations

from typing import Any

from tasks_app.models import Task, TaskEvent

# The keys of `task.model_dump_safe(exclude={"configuration", "deep_planning"})` in xpander-sdk 2.0.537.
SDK_DUMP_KEYS = [
    "id",
    "agent_id",
    "organization_id",
    "input",
    "status",
    "internal_status",
    "last_executed_node_id",
    "agent_version",
    "created_at",
    "started_at",
    "paused_at",
    "finished_at",
    "result",
    "parent_execution",
    "conversation_id",
    "conversation_kind",
    "sub_executions",
    "should_update_parent",
    "is_manually_stopped",
    "payload_extension",
    "execution_kind",
    "hitl_request",
    "pending_eca_request",
    "source",
    "voice_id",
    "output_format",
    "output_schema",
    "events_streaming",
    "is_orchestration",
    "is_gateway",
    "is_app",
    "background_auth_eligible",
    "additional_context",
    "tool_call_limit",
    "instructions_override",
    "test_run_node_id",
    "user_oidc_token",
    "expected_output",
    "mcp_servers",
    "triggering_agent_id",
    "title",
    "think_mode",
    "disable_attachment_injection",
    "user_tokens",
    "must_deep_plan",
    "execution_attempts",
    "return_metrics",
    "llm_model_provider",
    "llm_model_name",
    "llm_reasoning_effort",
    "harness_cli",
    "permission_mode",
    "tokens",
    "used_tools",
    "duration",
]


def sdk_dump(task: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The body the official SDK's save()/set_status() sends for a Task it parsed from `task`."""
    body = {key: task.get(key) for key in SDK_DUMP_KEYS}
    body["input"] = {
        "text": task["input"].get("text"),
        "files": task["input"].get("files", []),
        "attachments": [],
        "user": task["input"].get("user"),
        "principal": None,
    }
    body["user_tokens"] = None
    body.update(changes)
    return body


def update(persona, task_id: str, body: Any, **kw):
    return persona.patch(f"/api/agent-execution/{task_id}/update", body, **kw)


def event_types(task_id: str) -> list[str]:
    return list(TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list("type", flat=True))


def test_it_finishes_a_task_with_a_result(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], {"status": "completed", "result": "R"})
    assert r.status_code == 200
    assert r["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "completed"
    assert body["result"] == "R"
    assert body["finished_at"].endswith("Z")
    assert body["user_tokens"] is None
    row = Task.objects.get(pk=task["id"])
    assert (row.status, row.result) == ("completed", "R")
    assert event_types(task["id"]) == ["task_created", "task_updated", "task_finished"]
    finished = TaskEvent.objects.get(task_id=task["id"], type="task_finished")
    assert finished.data["status"] == "completed" and finished.data["result"] == "R"


def test_it_moves_a_task_to_executing(bob, task_of):
    task = task_of()
    r = update(bob, task["id"], {"status": "executing", "last_executed_node_id": "node-1"})
    assert r.status_code == 200
    assert r.json()["status"] == "executing"
    assert r.json()["started_at"] is not None
    assert r.json()["last_executed_node_id"] == "node-1"
    assert event_types(task["id"]) == ["task_created", "task_updated"]


def test_it_records_a_failure_and_its_source(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], {"status": "failed", "result": "boom", "source": "worker"})
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["result"], r.json()["source"]) == ("failed", "boom", "worker")


def test_it_refuses_to_move_a_finished_task(alice, task_of):
    task = task_of()
    update(alice, task["id"], {"status": "completed", "result": "R"})
    before = event_types(task["id"])
    r = update(alice, task["id"], {"status": "executing", "result": "again"})
    assert r.status_code == 409
    assert r.json()["status"] == "completed"
    assert "already completed" in r.json()["detail"]
    row = Task.objects.get(pk=task["id"])
    assert (row.status, row.result) == ("completed", "R")
    assert event_types(task["id"]) == before


def test_it_accepts_the_same_final_status_again(alice, task_of):
    task = task_of()
    update(alice, task["id"], {"status": "completed", "result": "R"})
    r = update(alice, task["id"], {"status": "completed"})
    assert r.status_code == 200
    assert r.json()["status"] == "completed"
    assert event_types(task["id"]).count("task_finished") == 1


def test_save_with_a_full_dump_finishes_a_task(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], sdk_dump(task, status="completed", result="Done", internal_status="review"))
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["result"], body["internal_status"]) == ("completed", "Done", "review")
    assert body["id"] == task["id"] and body["created_at"] == task["created_at"]


def test_a_stale_full_dump_keeps_the_final_status(alice, task_of):
    task = task_of()
    update(alice, task["id"], {"status": "completed", "result": "R"})
    stale = sdk_dump(task, status="pending", result=None, internal_status="sent to customer")
    r = update(alice, task["id"], stale)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "completed"
    assert body["result"] == "R"
    assert body["internal_status"] == "sent to customer"
    row = Task.objects.get(pk=task["id"])
    assert (row.status, row.result, row.internal_status) == ("completed", "R", "sent to customer")


def test_a_full_dump_changes_no_read_only_field(alice, task_of):
    task = task_of("original prompt")
    update(alice, task["id"], {"status": "completed", "result": "R"})
    dump = sdk_dump(
        task,
        status="completed",
        id="someone-else",
        agent_id="other-agent",
        organization_id="other-org",
        created_at="2001-01-01T00:00:00Z",
        input={"text": "rewritten", "files": [], "attachments": [], "user": None, "principal": None},
        tokens={"completion_tokens": 9, "prompt_tokens": 9, "total_tokens": 18},
        result="rewritten result",
    )
    r = update(alice, task["id"], dump)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == task["id"]
    assert body["agent_id"] == task["agent_id"]
    assert body["organization_id"] == task["organization_id"]
    assert body["created_at"] == task["created_at"]
    assert body["input"]["text"] == "original prompt"
    assert body["tokens"]["total_tokens"] == 0
    assert body["result"] == "R"


def test_it_rejects_an_unknown_status(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], {"status": "running"})
    assert r.status_code == 422
    assert r.json()["field"] == "status"
    assert Task.objects.get(pk=task["id"]).status == "pending"


def test_it_names_a_field_of_the_wrong_type(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], {"status": "completed", "result": {"not": "a string"}})
    assert r.status_code == 422
    assert r.json()["field"] == "result"
    r = update(alice, task["id"], {"internal_status": 7})
    assert r.status_code == 422
    assert r.json()["field"] == "internal_status"
    r = update(alice, task["id"], ["completed"])
    assert r.status_code == 422
    assert Task.objects.get(pk=task["id"]).status == "pending"
    assert event_types(task["id"]) == ["task_created"]


def test_it_rejects_malformed_json(alice, task_of):
    task = task_of()
    r = update(alice, task["id"], None, raw=b'{"status": "completed"')
    assert r.status_code == 400
    assert "Malformed JSON" in r.json()["detail"]
    assert Task.objects.get(pk=task["id"]).status == "pending"


def test_it_rejects_unknown_tasks(alice):
    r = update(alice, "no-such-task", {"status": "completed"})
    assert r.status_code == 404
    assert r.json()["detail"] == "Task no-such-task not found"


def test_a_viewer_cannot_update(vera, task_of):
    task = task_of()
    r = update(vera, task["id"], {"status": "completed", "result": "R"})
    assert r.status_code == 403
    assert "viewer" in r.json()["detail"]
    assert Task.objects.get(pk=task["id"]).status == "pending"


def test_it_requires_an_api_key(alice, task_of):
    task = task_of()
    r = alice.client.patch(
        f"/api/agent-execution/{task['id']}/update", data="{}", content_type="application/json"
    )
    assert r.status_code == 401
    assert r["Content-Type"].startswith("application/json")


def test_an_update_answers_with_the_sub_tasks_its_snapshot_read(alice, task_of):
    """The response reuses the sub-tasks the update's own snapshot read (rows.answer_json): they are
    the ones the status read and the task_finished event give, and an update that wrote no
    snapshot reads them itself."""
    parent = task_of("orchestrate")
    row = Task.objects.get(pk=parent["id"])
    children = [Task.objects.create(organization_id=row.organization_id, agent_id=row.agent_id, parent=row)]
    quiet = alice.patch(
        f"/api/agent-execution/{parent['id']}/update", {"title": ""}
    )  # no change, no snapshot
    assert quiet.json()["sub_executions"] == [children[0].id]
    children.append(
        Task.objects.create(organization_id=row.organization_id, agent_id=row.agent_id, parent=row)
    )
    r = alice.patch(f"/api/agent-execution/{parent['id']}/update", {"status": "completed", "result": "R"})
    assert r.status_code == 200, r.content
    ids = [c.id for c in sorted(children, key=lambda c: c.created_at)]
    assert r.json()["sub_executions"] == ids
    assert alice.get(f"/api/agent-execution/{parent['id']}/status").json()["sub_executions"] == ids
    finished = TaskEvent.objects.get(task_id=parent["id"], type="task_finished").data
    assert finished["sub_executions"] == ids
    assert {k: v for k, v in r.json().items() if k != "tokens"} == {
        k: v for k, v in finished.items() if k != "tokens"
    }


def test_finishing_an_external_task_reads_neither_its_agent_nor_its_sub_tasks_twice(alice, task_of):
    """A worker's final update reads the task row alone (its agent only matters for a status that is
    not final) and reads the sub-tasks once, for the snapshot its response reuses."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    task = task_of()
    with CaptureQueriesContext(connection) as ctx:
        r = alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": "R"})
    assert r.status_code == 200, r.content
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not [s for s in sql if 'FROM "console_agent"' in s], sql
    assert len([s for s in sql if 'WHERE "tasks_app_task"."parent_id"' in s]) == 1, sql

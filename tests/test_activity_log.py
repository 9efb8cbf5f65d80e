"""GET /api/activity/{agent_id}/{task_id}: task.get_activity_log() in the shapes of xpander-wire.md 4.3."""

from __future__ import annotations

from tasks_app import actions
from tasks_app.models import ActivityEntry
from tests.conftest import create_body

USER = {
    "id": "u1",
    "first_name": "Uma",
    "last_name": None,
    "email": "uma@example.com",
    "additional_attributes": None,
    "timezone": None,
}


def activity(persona, agent_id: str, task_id: str):
    return persona.get(f"/api/activity/{agent_id}/{task_id}")


def push(persona, task_id: str, events: list[dict]):
    r = persona.post(f"/api/agent-execution/{task_id}/events/push", events)
    assert r.status_code == 200, r.content
    return r


def test_it_starts_with_the_user_message(alice, task_of, external_agent):
    task = task_of(
        "Summarise", input={"text": "Summarise", "files": ["https://example.com/a.pdf"], "user": USER}
    )
    r = activity(alice, external_agent.id, task["id"])
    assert r.status_code == 200
    assert r["Content-Type"].startswith("application/json")
    thread = r.json()
    assert set(thread) == {"id", "created_at", "messages", "user"}
    assert thread["id"] == task["id"]
    assert thread["created_at"].endswith("Z")
    assert thread["user"]["email"] == "uma@example.com"
    [message] = thread["messages"]
    assert set(message) == {"id", "created_at", "role", "content", "user"}
    assert isinstance(message["id"], str) and message["created_at"].endswith("Z")
    assert message["role"] == "user"
    assert message["content"] == {"text": "Summarise", "files": ["https://example.com/a.pdf"]}
    assert message["user"]["email"] == "uma@example.com"


def test_a_message_without_a_user_has_no_user_key(alice, task_of, external_agent):
    task = task_of("hi")
    thread = activity(alice, external_agent.id, task["id"]).json()
    assert "user" not in thread
    assert thread["messages"][0] == {
        "id": thread["messages"][0]["id"],
        "created_at": thread["messages"][0]["created_at"],
        "role": "user",
        "content": {"text": "hi", "files": []},
    }


def test_pushed_events_become_entries_in_the_wire_shapes(alice, task_of, external_agent):
    task = task_of("Find the bug")
    push(
        alice,
        task["id"],
        [
            {"type": "chunk", "data": "thinking out loud"},
            {"type": "tool_call_request", "data": {"request_id": "r1", "tool_name": "search"}},
            {
                "type": "tool_call_result",
                "data": {
                    "request_id": "r1",
                    "operation_id": "op",
                    "tool_name": "search",
                    "payload": {"q": "bug"},
                    "result": "3 hits",
                    "is_error": False,
                    "graph_node_id": "gi-search",
                },
            },
            {"type": "think", "data": {"title": "Plan", "thought": "Look at the logs"}},
            {"type": "analyze", "data": "The logs show a timeout"},
            {
                "type": "sub_agent_trigger",
                "data": {
                    "agent_id": "helper-agent",
                    "query": "check the DB",
                    "reasoning": {"title": "Delegate", "description": "needs DB access"},
                },
            },
            {
                "type": "auth_event",
                "data": {
                    "type": "login_required",
                    "data": {"url": "https://idp/login", "server_url": "https://mcp", "server_name": "GH"},
                },
            },
        ],
    )
    messages = activity(alice, external_agent.id, task["id"]).json()["messages"]
    assert len(messages) == 6  # chunks and tool call requests are not activity
    user, tool, think, analyze, trigger, auth = messages
    assert user["role"] == "user"
    for entry in messages:
        assert isinstance(entry["id"], str) and entry["created_at"].endswith("Z")
        assert not {"action", "created_execution_id", "executions"} & set(entry)
    assert {k: v for k, v in tool.items() if k not in ("id", "created_at")} == {
        "tool_name": "search",
        "payload": {"q": "bug"},
        "result": "3 hits",
        "is_error": False,
        "graph_item_id": "gi-search",
    }
    assert {k: v for k, v in think.items() if k not in ("id", "created_at")} == {
        "type": "think",
        "title": "Plan",
        "confidence": 1.0,
        "thought": "Look at the logs",
    }
    assert analyze["type"] == "analyze"
    assert analyze["thought"] == "The logs show a timeout"
    assert isinstance(analyze["confidence"], float) and isinstance(analyze["title"], str)
    assert {k: v for k, v in trigger.items() if k not in ("id", "created_at")} == {
        "agent_id": "helper-agent",
        "query": "check the DB",
        "files": [],
        "reasoning": {"title": "Delegate", "description": "needs DB access"},
    }
    assert {k: v for k, v in auth.items() if k not in ("id", "created_at")} == {
        "type": "login_required",
        "data": {"url": "https://idp/login", "server_url": "https://mcp", "server_name": "GH"},
    }


def test_a_tool_call_without_payload_still_has_the_payload_key(alice, task_of, external_agent):
    task = task_of()
    push(alice, task["id"], [{"type": "tool_call_result", "data": {"tool_name": "ping", "result": "pong"}}])
    tool = activity(alice, external_agent.id, task["id"]).json()["messages"][1]
    assert "payload" in tool and tool["payload"] is None
    assert tool["tool_name"] == "ping"


def test_a_sub_agent_trigger_always_has_a_reasoning_object(alice, task_of, external_agent):
    task = task_of()
    push(
        alice,
        task["id"],
        [{"type": "sub_agent_trigger", "data": {"agent_id": "helper", "reasoning": "a plain string"}}],
    )
    trigger = activity(alice, external_agent.id, task["id"]).json()["messages"][1]
    assert trigger["reasoning"] == {}
    assert trigger["agent_id"] == "helper"


def test_the_agent_answer_is_a_message_with_role_agent(alice, task_of, external_agent):
    task = task_of("Question")
    actions.claim_task(task["id"], "w1", lease_seconds=60)
    actions.finish_task(task["id"], "completed", "Answer", worker_id="w1", final_message="Answer")
    messages = activity(alice, external_agent.id, task["id"]).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "agent"]
    assert messages[1]["content"] == {"text": "Answer", "files": []}


def test_an_external_workers_result_is_the_agent_message(alice, task_of, external_agent):
    task = task_of("Question")
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": "Answer"})
    messages = activity(alice, external_agent.id, task["id"]).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "agent"]
    assert messages[1]["content"] == {"text": "Answer", "files": []}
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"internal_status": "read"})
    assert len(activity(alice, external_agent.id, task["id"]).json()["messages"]) == 2


def test_a_follow_up_turn_continues_the_thread(alice, task_of, external_agent):
    task = task_of("First")
    alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "completed", "result": "One"})
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body("Second", id=task["id"]))
    assert r.status_code == 200
    assert r.json()["id"] == task["id"] and r.json()["status"] == "pending"
    messages = activity(alice, external_agent.id, task["id"]).json()["messages"]
    assert [(m["role"], m["content"]["text"]) for m in messages] == [
        ("user", "First"),
        ("agent", "One"),
        ("user", "Second"),
    ]
    assert list(ActivityEntry.objects.filter(task_id=task["id"]).values_list("turn", flat=True)) == [1, 1, 2]


def test_it_rejects_a_task_of_another_agent(alice, task_of):
    task = task_of()
    other = alice.post("/api/v1/agents", {"name": "Other", "framework": "external"}).json()
    r = activity(alice, other["id"], task["id"])
    assert r.status_code == 404
    assert r.json()["detail"] == f"Task {task['id']} not found for agent {other['id']}"


def test_it_rejects_unknown_tasks(alice, external_agent):
    r = activity(alice, external_agent.id, "no-such-task")
    assert r.status_code == 404


def test_a_viewer_can_read_it(vera, task_of, external_agent):
    task = task_of()
    r = activity(vera, external_agent.id, task["id"])
    assert r.status_code == 200
    assert len(r.json()["messages"]) == 1

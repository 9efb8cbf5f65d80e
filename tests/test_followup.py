"""Follow-up turns (the SDK's existing_task_id): the same task continues with its history."""

from __future__ import annotations

import uuid

import pytest

from tests.test_runtime_run import builtin_agent, sse
from tests.test_runtime_stop import wait_status
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def test_a_second_turn_sees_the_first_and_continues_the_stream(daphne_server, mcp_server):
    alice = daphne_server.account("Followup Org", "alice@followup.test")
    api = daphne_server.client(alice)
    marker = f"[fu-{uuid.uuid4().hex[:6]}]"
    graph = [
        {
            "id": "gi-tools",
            "type": "mcp",
            "name": "Tools",
            "settings": {"mcp_settings": {"url": mcp_server.url, "auth_type": "oauth2"}},
        }
    ]
    script = [Turn.tool("add", {"a": 2, "b": 3}), Turn.reply("Five.", chunks=2), Turn.reply("Ten, doubled.")]
    with ScriptedModel(scripts={marker: script}) as model:
        agent = builtin_agent(api, model, graph=graph)
        first = api.post(
            f"/agent-execution/{agent['id']}",
            json={
                "input": {"text": f"{marker} add 2 and 3"},
                "events_streaming": True,
                "user_tokens": {"gi-tools": "tok-alice"},
            },
        ).json()
        turn_one = sse(daphne_server, alice, first["id"])
        assert turn_one[-1]["data"]["result"] == "Five."
        last_seq = len(turn_one)
        second = api.post(
            f"/agent-execution/{agent['id']}",
            json={"id": first["id"], "input": {"text": "now double it"}, "events_streaming": True},
        )
        assert second.status_code == 200, second.text
        assert second.json()["id"] == first["id"]
        turn_two = sse(daphne_server, alice, first["id"], last=last_seq)
        history = model.requests[2].messages
    assert turn_two[-1]["type"] == "task_finished"
    final = turn_two[-1]["data"]
    assert final["status"] == "completed" and final["result"] == "Ten, doubled."
    assert final["turns"] == 2
    assert final["used_tools"] == ["add"]
    roles = [m["role"] for m in history if m["role"] != "system"]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    first_user = next(m for m in history if m["role"] == "user")
    assert "add 2 and 3" in str(first_user["content"])
    assert any(m["role"] == "tool" and "5" in str(m["content"]) for m in history)
    log = api.get(f"/activity/{agent['id']}/{first['id']}").json()["messages"]
    texts = [m["content"]["text"] for m in log if "role" in m]
    assert texts == [f"{marker} add 2 and 3", "Five.", "now double it", "Ten, doubled."]
    everything = sse(daphne_server, alice, first["id"])
    assert [e["type"] for e in everything].count("task_finished") == 2


def test_a_follow_up_on_a_running_task_is_a_conflict(daphne_server):
    alice = daphne_server.account("Followup Org", "alice@followup.test")
    api = daphne_server.client(alice)
    marker = f"[fu2-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("wait", chunks=2, hang=True)]}) as model:
        agent = builtin_agent(api, model)
        task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": marker}}).json()
        wait_status(api, task["id"], "executing")
        r = api.post(f"/agent-execution/{agent['id']}", json={"id": task["id"], "input": {"text": "more"}})
        assert r.status_code == 409
        assert r.json()["status"] == "executing"
        api.delete(f"/agent-execution/{task['id']}")


def test_a_follow_up_on_another_agent_or_organization_is_not_found(daphne_server):
    alice = daphne_server.account("Followup Org", "alice@followup.test")
    charlie = daphne_server.account("Other Followup Org", "charlie@followup.test")
    api = daphne_server.client(alice)
    ext = api.post("/v1/agents", json={"name": f"x {uuid.uuid4().hex[:6]}", "framework": "external"}).json()
    other = api.post("/v1/agents", json={"name": f"y {uuid.uuid4().hex[:6]}", "framework": "external"}).json()
    task = api.post(f"/agent-execution/{ext['id']}", json={"input": {"text": "one"}}).json()
    api.patch(f"/agent-execution/{task['id']}/update", json={"status": "stopped"})
    r = api.post(f"/agent-execution/{other['id']}", json={"id": task["id"], "input": {"text": "two"}})
    assert r.status_code == 404
    their = daphne_server.client(charlie)
    mine = their.post(
        "/v1/agents", json={"name": f"z {uuid.uuid4().hex[:6]}", "framework": "external"}
    ).json()
    assert (
        their.post(
            f"/agent-execution/{mine['id']}", json={"id": task["id"], "input": {"text": "x"}}
        ).status_code
        == 404
    )
    again = api.post(f"/agent-execution/{ext['id']}", json={"id": task["id"], "input": {"text": "two"}})
    assert again.status_code == 200 and again.json()["status"] == "pending" and again.json()["turns"] == 2

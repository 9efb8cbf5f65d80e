"""Stopping a running built-in task really stops it: the model's connection is closed."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.test_runtime_run import builtin_agent, sse
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def wait_status(api: httpx.Client, task_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api.get(f"/agent-execution/{task_id}/status").json()
        if task["status"] == status:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never became {status}: {task['status']}")


def test_stop_cancels_the_model_stream(daphne_server):
    alice = daphne_server.account("Stop Org", "alice@stop.test")
    api = daphne_server.client(alice)
    marker = f"[stop-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("Working on it", chunks=3, hang=True)]}) as model:
        agent = builtin_agent(api, model)
        task = api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"{marker} long job"}, "events_streaming": True},
        ).json()
        model.wait_for(lambda: model.requests and model.requests[0].chunks_sent >= 1, timeout=20)
        stopped = api.delete(f"/agent-execution/{task['id']}")
        assert stopped.status_code == 200
        body = stopped.json()
        assert body["status"] == "stopped" and body["is_manually_stopped"] is True
        model.wait_for(lambda: model.requests[0].disconnected, timeout=10)
    events = sse(daphne_server, alice, task["id"])
    assert events[-1]["type"] == "task_finished"
    assert [e for e in events if e["type"] == "task_finished"][-1]["data"]["status"] == "stopped"
    again = api.delete(f"/agent-execution/{task['id']}")
    assert again.status_code == 409
    assert again.json()["status"] == "stopped"


def test_a_sub_agent_runs_as_a_child_task_and_stops_with_its_parent(daphne_server):
    alice = daphne_server.account("Stop Org", "alice@stop.test")
    api = daphne_server.client(alice)
    marker = f"[sub-{uuid.uuid4().hex[:6]}]"
    child_marker = f"[child-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(
        scripts={
            marker: [
                Turn.tool("ask_helper_" + marker[5:11], {"query": f"{child_marker} dig"}),
                Turn.reply("Parent done."),
            ],
            child_marker: [Turn.reply("Child answer.", chunks=2)],
        }
    ) as model:
        helper = builtin_agent(
            api, model, name=f"helper {marker[5:11]}", unique_name=f"helper_{marker[5:11]}"
        )
        parent = builtin_agent(
            api, model, graph=[{"id": "gi-helper", "type": "agent", "item_id": helper["id"]}]
        )
        task = api.post(
            f"/agent-execution/{parent['id']}",
            json={"input": {"text": f"{marker} go"}, "events_streaming": True},
        ).json()
        events = sse(daphne_server, alice, task["id"])
    final = events[-1]["data"]
    assert final["status"] == "completed", final["result"]
    assert final["result"] == "Parent done."
    trigger = next(e for e in events if e["type"] == "sub_agent_trigger")
    assert trigger["data"]["agent_id"] == helper["id"]
    child = api.get(f"/agent-execution/{trigger['data']['sub_task_id']}/status").json()
    assert child["parent_execution"] == task["id"] and child["triggering_agent_id"] == parent["id"]
    assert child["status"] == "completed" and child["result"] == "Child answer."
    assert final["sub_executions"] == [child["id"]]  # the finish of a run that delegated asks for them
    result = next(e for e in events if e["type"] == "tool_call_result")
    assert result["data"]["result"] == "Child answer."
    assert result["data"]["graph_node_id"] == "gi-helper"

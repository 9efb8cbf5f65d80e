"""Model errors, rate limits and limits end as clear results, events and activity entries."""

from __future__ import annotations

import uuid

import pytest

from tests.test_runtime_run import builtin_agent, sse
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def run(server, api, account, model, marker, **task_extra) -> tuple[list[dict], dict]:
    agent = builtin_agent(api, model, **task_extra.pop("agent", {}))
    task = api.post(
        f"/agent-execution/{agent['id']}",
        json={"input": {"text": f"{marker} go"}, "events_streaming": True, **task_extra},
    ).json()
    events = sse(server, account, task["id"])
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    return events, log


def test_a_rate_limit_is_retried_then_fails_readably(daphne_server):
    alice = daphne_server.account("Failure Org", "alice@fail.test")
    api = daphne_server.client(alice)
    marker = f"[rl-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.error(429)] * 3}) as model:
        events, log = run(daphne_server, api, alice, model, marker)
        assert len(model.requests) == 3  # the first try and two retries
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "rate limited" in final["result"]
    assert log[-1]["role"] == "agent" and log[-1]["content"]["text"].startswith("Error:")


def test_a_rate_limit_then_success_completes(daphne_server):
    alice = daphne_server.account("Failure Org", "alice@fail.test")
    api = daphne_server.client(alice)
    marker = f"[rl2-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.error(429), Turn.reply("Fine now.")]}) as model:
        events, _ = run(daphne_server, api, alice, model, marker)
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["result"] == "Fine now."


def test_the_tool_call_limit_is_enforced(daphne_server):
    alice = daphne_server.account("Failure Org", "alice@fail.test")
    api = daphne_server.client(alice)
    marker = f"[lim-{uuid.uuid4().hex[:6]}]"
    tag = marker[5:11]
    child = f"[limchild-{tag}]"
    calls = Turn.tools((f"ask_h_{tag}", {"query": f"{child} a"}), (f"ask_h_{tag}", {"query": f"{child} b"}))
    with ScriptedModel(
        scripts={marker: [calls, Turn.reply("unreachable")], child: [Turn.reply("x"), Turn.reply("y")]}
    ) as model:
        helper = builtin_agent(api, model, name=f"h {tag}", unique_name=f"h_{tag}")
        events, _ = run(
            daphne_server,
            api,
            alice,
            model,
            marker,
            tool_call_limit=1,
            agent={"graph": [{"id": "gi-h", "type": "agent", "item_id": helper["id"]}]},
        )
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "Tool call limit" in final["result"]


def test_an_unreachable_model_fails_readably(daphne_server):
    alice = daphne_server.account("Failure Org", "alice@fail.test")
    api = daphne_server.client(alice)
    model = ScriptedModel([]).start()
    model.stop()  # nothing listens on its port any more
    events, _ = run(daphne_server, api, alice, model, "[gone]")
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "could not be reached" in final["result"]

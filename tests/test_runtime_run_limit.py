"""A built-in run past its agent's maximum run time is stopped, with a result that says why."""

from __future__ import annotations

import uuid

import pytest

from tests.test_runtime_run import builtin_agent, sse
from tests.test_runtime_stop import wait_status
from tests.tools.scripted_model import ScriptedModel, Turn


@pytest.mark.live
def test_a_run_past_its_maximum_time_is_stopped_with_a_clear_result(daphne_server):
    alice = daphne_server.account("Limit Org", "alice@limit.test")
    api = daphne_server.client(alice)
    marker, warm = f"[limit-{uuid.uuid4().hex[:6]}]", f"[warm-{uuid.uuid4().hex[:6]}]"
    scripts = {marker: [Turn.reply("Thinking for ever", chunks=3, hang=True)], warm: [Turn.reply("ok")]}
    with ScriptedModel(scripts=scripts) as model:
        # A first run loads the model libraries into the server: the limit then times the run alone.
        first = api.post(
            f"/agent-execution/{builtin_agent(api, model)['id']}", json={"input": {"text": warm}}
        )
        wait_status(api, first.json()["id"], "completed", timeout=60)
        agent = builtin_agent(api, model, max_run_seconds=3)
        assert agent["max_run_seconds"] == 3
        task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} go"}}).json()
        model.wait_for(lambda: len(model.requests) == 2 and model.requests[1].chunks_sent >= 1, timeout=20)
        done = wait_status(api, task["id"], "stopped", timeout=20)
        model.wait_for(lambda: model.requests[1].disconnected, timeout=10)
    assert done["result"] == "Stopped: the run passed the agent's maximum run time of 3 seconds"
    finished = [e for e in sse(daphne_server, alice, task["id"]) if e["type"] == "task_finished"]
    assert finished[-1]["data"]["status"] == "stopped"


@pytest.mark.django_db
def test_the_limit_is_validated_like_every_agent_field(alice):
    r = alice.post("/api/v1/agents", {"name": "Scout", "max_run_seconds": 0})
    assert r.status_code == 422 and r.json()["field"] == "max_run_seconds"
    agent = alice.post("/api/v1/agents", {"name": "Scout", "max_run_seconds": 30}).json()
    assert agent["max_run_seconds"] == 30
    cleared = alice.patch(f"/api/v1/agents/{agent['id']}", {"max_run_seconds": None}).json()
    assert cleared["max_run_seconds"] is None

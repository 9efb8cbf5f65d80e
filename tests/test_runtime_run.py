"""A built-in agent's task runs on the server: the model answers and it all lands in the logs."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def sse(server, account, task_id: str, last: int | None = None) -> list[dict]:
    headers = {"x-api-key": account.api_key}
    if last is not None:
        headers["Last-Event-ID"] = str(last)
    out = []
    with httpx.stream(
        "GET", f"{server.api}/agent-execution/{task_id}/events", headers=headers, timeout=60
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def builtin_agent(api: httpx.Client, model: ScriptedModel, **extra) -> dict:
    body = {
        "name": f"Analyst {uuid.uuid4().hex[:8]}",
        "framework": "builtin",
        "model_provider": "openai_compatible",
        "model_name": "scripted",
        "model_base_url": model.base_url,
        "model_api_key": "sk-model-secret-123",
        "instructions": "Answer briefly.",
        **extra,
    }
    r = api.post("/v1/agents", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_it_streams_a_reasoned_answer_and_records_it(daphne_server):
    alice = daphne_server.account("Runtime Org", "alice@runtime.test")
    api = daphne_server.client(alice)
    marker = f"[run-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(
        scripts={marker: [Turn.think("Let me think.", "The answer is forty-two.", chunks=20)]}
    ) as model:
        agent = builtin_agent(api, model)
        task = api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"{marker} What is it?"}, "events_streaming": True},
        ).json()
        events = sse(daphne_server, alice, task["id"])
        assert model.errors == []
    types = [e["type"] for e in events]
    assert types[0] == "task_created" and types[-1] == "task_finished"
    assert "think" in types
    text = "".join(e["data"] for e in events if e["type"] == "chunk")
    assert text == "The answer is forty-two."
    assert len([t for t in types if t == "chunk"]) < 20  # coalesced, not one row per token
    final = events[-1]["data"]
    assert final["status"] == "completed" and final["result"] == "The answer is forty-two."
    assert final["tokens"]["completion_tokens"] > 0
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    assert [m.get("role") or m.get("type") for m in log] == ["user", "think", "agent"]
    assert log[1]["thought"] == "Let me think."
    assert "sk-model-secret-123" not in json.dumps(events) + json.dumps(log)


def test_missing_credentials_fail_at_once_with_what_to_configure(daphne_server):
    alice = daphne_server.account("Runtime Org", "alice@runtime.test")
    api = daphne_server.client(alice)
    r = api.post(
        "/v1/agents",
        json={
            "name": f"NoKey {uuid.uuid4().hex[:6]}",
            "framework": "builtin",
            "model_provider": "anthropic",
            "model_name": "claude",
        },
    )
    agent = r.json()
    task = api.post(
        f"/agent-execution/{agent['id']}", json={"input": {"text": "hi"}, "events_streaming": True}
    ).json()
    final = sse(daphne_server, alice, task["id"])[-1]["data"]
    assert final["status"] == "failed"
    assert "ANTHROPIC_API_KEY" in final["result"]

"""A built-in agent on model_provider "anthropic" runs for real: the Anthropic SDK talks to a scripted
Messages API server over HTTP, with thinking, an MCP tool call as the task's user, and rate limits."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.test_runtime_mcp import mcp_graph
from tests.test_runtime_run import sse
from tests.tools.scripted_anthropic import ScriptedAnthropic, ToolCall, Turn

pytestmark = pytest.mark.live

API_KEY = "sk-ant-test"


def anthropic_agent(api: httpx.Client, model: ScriptedAnthropic, **extra) -> dict:
    body = {
        "name": f"Claude {uuid.uuid4().hex[:8]}",
        "framework": "builtin",
        "model_provider": "anthropic",
        "model_name": "claude-test",
        "model_base_url": model.base_url,  # no /v1: the SDK posts to <base>/v1/messages
        "model_api_key": API_KEY,
        "instructions": "Answer briefly.",
        **extra,
    }
    r = api.post("/v1/agents", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def start(api: httpx.Client, agent: dict, text: str, **extra) -> dict:
    r = api.post(
        f"/agent-execution/{agent['id']}", json={"input": {"text": text}, "events_streaming": True, **extra}
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_an_anthropic_agent_thinks_calls_a_tool_as_the_user_and_streams_its_answer(daphne_server, mcp_server):
    alice = daphne_server.account("Anthropic Org", "alice@anthropic.test")
    api = daphne_server.client(alice)
    marker = f"[claude-{uuid.uuid4().hex[:6]}]"
    thought = "The user asks who they are; the whoami tool knows."
    answer = "You are alice, according to the Tools server."
    script = [
        Turn.think(thought, reasoning_chunks=4, tool_calls=[ToolCall("whoami")], usage=(100, 12)),
        Turn.reply(answer, chunks=20, delay_chunk=0.01, usage=(150, 30)),  # streamed over ~0.2 s
    ]
    with ScriptedAnthropic(scripts={marker: script}) as model:
        agent = anthropic_agent(api, model, graph=mcp_graph(mcp_server.url))
        task = start(api, agent, f"{marker} Who am I?", user_tokens={"gi-tools": "tok-alice"})
        events = sse(daphne_server, alice, task["id"])
        model.wait_request(1)  # the server thread records the end of an answer after the client read it
        requests = model.requests
        assert model.errors == []
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]

    final = events[-1]
    assert final["type"] == "task_finished"
    assert final["data"]["status"] == "completed", final["data"]["result"]
    assert final["data"]["result"] == answer
    chunks = [e["data"] for e in events if e["type"] == "chunk"]
    assert "".join(chunks) == answer
    assert 1 <= len(chunks) < 20  # coalesced, not one row per delta

    think = next(e for e in events if e["type"] == "think")["data"]
    assert think["thought"] == thought
    request = next(e for e in events if e["type"] == "tool_call_request")["data"]
    result = next(e for e in events if e["type"] == "tool_call_result")["data"]
    assert request["tool_name"] == result["tool_name"] == "whoami"
    assert request["graph_node_id"] == "gi-tools" and request["payload"] == {}
    assert result["is_error"] is False and "alice" in json.dumps(result["result"])
    assert [(c.name, c.user) for c in mcp_server.calls] == [("whoami", "alice")]

    # What the Anthropic server saw: two streamed Messages API calls authenticated with the agent's key.
    assert len(requests) == 2
    first, second = requests
    for r in requests:
        assert r.path == "/v1/messages" and r.stream and r.completed
        assert r.api_key == API_KEY
        assert r.anthropic_version
        assert r.body["model"] == "claude-test" and r.body["max_tokens"] > 0
        assert "Answer briefly." in r.system
        assert "whoami" in r.tool_names
    assert marker in first.user_text
    assert (first.chunks_sent, second.chunks_sent) == (4 + 3, 20)  # thinking + tool input deltas; text
    # The second call carries the tool_use back with its tool_result, and the signed thinking block.
    assert [(u["id"], u["name"]) for u in second.tool_uses] == [(first.tool_use_ids[0], "whoami")]
    assert [r["tool_use_id"] for r in second.tool_results] == first.tool_use_ids
    assert "alice" in json.dumps(second.tool_results[0]["content"])
    assert [(t["thinking"], t["signature"]) for t in second.thinking] == [(thought, first.signatures[0])]

    tokens = final["data"]["tokens"]
    assert tokens["prompt_tokens"] == 250 and tokens["completion_tokens"] == 42
    assert final["data"]["used_tools"] == ["whoami"]
    kinds = [m.get("role") or m.get("type") or m.get("tool_name") for m in log]
    assert kinds == ["user", "think", "whoami", "agent"], log
    assert log[-1]["content"]["text"] == answer
    everything = json.dumps(events) + json.dumps(log)
    assert API_KEY not in everything and "tok-alice" not in everything


def test_an_anthropic_rate_limit_is_retried_then_fails_readably(daphne_server):
    alice = daphne_server.account("Anthropic Org", "alice@anthropic.test")
    api = daphne_server.client(alice)
    marker = f"[claude-rl-{uuid.uuid4().hex[:6]}]"
    # MODEL_MAX_RETRIES=2: the first try and two SDK retries, each answered 429 (retry-after honoured).
    script = [Turn.error(429, "Number of request tokens has exceeded your rate limit.", retry_after=0.1)] * 3
    with ScriptedAnthropic(scripts={marker: script}) as model:
        agent = anthropic_agent(api, model)
        task = start(api, agent, f"{marker} go")
        events = sse(daphne_server, alice, task["id"])
        requests = model.requests
        assert model.errors == []
    assert [r.status for r in requests] == [429, 429, 429]
    assert [r.headers.get("x-stainless-retry-count") for r in requests] == ["0", "1", "2"]
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "rate limited" in final["result"] and "rate_limit_error" in final["result"]
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    assert log[-1]["role"] == "agent" and log[-1]["content"]["text"].startswith("Error:")
    assert API_KEY not in json.dumps(events) + json.dumps(log)


def test_an_anthropic_overload_is_retried_and_the_task_completes(daphne_server):
    alice = daphne_server.account("Anthropic Org", "alice@anthropic.test")
    api = daphne_server.client(alice)
    marker = f"[claude-529-{uuid.uuid4().hex[:6]}]"
    script = [Turn.error(529, "Overloaded", retry_after=0.1), Turn.reply("Back again.", chunks=3)]
    with ScriptedAnthropic(scripts={marker: script}) as model:
        agent = anthropic_agent(api, model)
        task = start(api, agent, f"{marker} go")
        events = sse(daphne_server, alice, task["id"])
        assert [r.status for r in model.requests] == [529, 200]
    final = events[-1]["data"]
    assert final["status"] == "completed" and final["result"] == "Back again."


def test_an_overload_reported_mid_stream_fails_the_task_readably(daphne_server):
    alice = daphne_server.account("Anthropic Org", "alice@anthropic.test")
    api = daphne_server.client(alice)
    marker = f"[claude-mid-{uuid.uuid4().hex[:6]}]"
    script = [Turn.error(529, "Overloaded", error_in_stream=True, text="Partial ans", chunks=2)]
    with ScriptedAnthropic(scripts={marker: script}) as model:
        agent = anthropic_agent(api, model)
        task = start(api, agent, f"{marker} go")
        events = sse(daphne_server, alice, task["id"])
        assert [(r.status, r.completed) for r in model.requests] == [(200, True)]  # an error event: no retry
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "HTTP 529" in final["result"] and "overloaded_error" in final["result"]


async def test_the_scripted_server_speaks_the_messages_api_to_the_sdk():
    """The server itself, through the Anthropic SDK's typed parsing: JSON answers, stream events, errors."""
    from anthropic import APIStatusError, RateLimitError

    script = [
        Turn.think("Hmm.", "Checking.", tool_calls=[ToolCall("add", {"a": 1, "b": 2}, id="toolu_x")]),
        Turn.reply("Three.", chunks=3, usage=(7, 3)),
        Turn.error(429, retry_after=1),
        Turn.error(529, "Overloaded", error_in_stream=True),
    ]
    hi = [{"role": "user", "content": "hi"}]
    with ScriptedAnthropic(script) as model:
        client = model.client()
        message = await client.messages.create(model="claude-test", max_tokens=64, messages=hi)
        assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
        assert message.content[0].signature == model.requests[0].signatures[0]
        assert (message.content[2].id, message.content[2].input) == ("toolu_x", {"a": 1, "b": 2})
        assert message.stop_reason == "tool_use" and message.usage.input_tokens > 0

        stream = await client.messages.create(model="claude-test", max_tokens=64, messages=hi, stream=True)
        kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) async for e in stream]
        assert kinds == [
            ("message_start", None),
            ("content_block_start", None),
            *[("content_block_delta", "text_delta")] * 3,
            ("content_block_stop", None),
            ("message_delta", None),
            ("message_stop", None),
        ]

        with pytest.raises(RateLimitError) as limited:
            await client.messages.create(model="claude-test", max_tokens=64, messages=hi)
        assert limited.value.body["error"]["type"] == "rate_limit_error"
        assert limited.value.response.headers["retry-after"] == "1"

        with pytest.raises(APIStatusError) as overloaded:
            stream = await client.messages.create(
                model="claude-test", max_tokens=64, messages=hi, stream=True
            )
            async for _ in stream:
                pass
        assert overloaded.value.body["error"]["type"] == "overloaded_error"

        async with httpx.AsyncClient(base_url=model.base_url) as raw:  # no max_tokens: refused, no turn taken
            refused = await raw.post("/v1/messages", json={"model": "claude-test", "messages": hi})
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }
        assert model.remaining() == 0 and model.errors == []
        assert [r.status for r in model.requests] == [200, 200, 429, 200, 400]
        assert all(r.api_key == "sk-ant-test" for r in model.requests[:4])

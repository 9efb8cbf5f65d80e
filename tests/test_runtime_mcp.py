"""MCP graph items become tools called as the task's user, with the token from user_tokens."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.test_runtime_run import builtin_agent, sse
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def mcp_graph(url: str, auth_type: str = "oauth2") -> list[dict]:
    return [
        {
            "id": "gi-tools",
            "type": "mcp",
            "name": "Tools",
            "settings": {
                "mcp_settings": {"url": url, "transport": "streamable-http", "auth_type": auth_type}
            },
        }
    ]


def start(api, agent, text: str, **extra) -> dict:
    r = api.post(
        f"/agent-execution/{agent['id']}", json={"input": {"text": text}, "events_streaming": True, **extra}
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_two_users_tasks_call_as_two_different_users(daphne_server, mcp_server):
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    m1, m2 = f"[u1-{uuid.uuid4().hex[:6]}]", f"[u2-{uuid.uuid4().hex[:6]}]"
    script = {m: [Turn.tool("whoami", {}), Turn.reply("Done.")] for m in (m1, m2)}
    with ScriptedModel(scripts=script) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(mcp_server.url))
        t1 = start(
            api,
            agent,
            f"{m1} who?",
            user_tokens={"gi-tools": "tok-alice"},
            input={"text": f"{m1} who?", "user": {"id": "u-alice", "email": "alice@mcp.test"}},
        )
        t2 = start(
            api,
            agent,
            f"{m2} who?",
            user_tokens={"gi-tools": "tok-bob"},
            input={"text": f"{m2} who?", "user": {"id": "u-bob", "email": "bob@mcp.test"}},
        )
        e1, e2 = sse(daphne_server, alice, t1["id"]), sse(daphne_server, alice, t2["id"])
    for events, user in ((e1, "alice"), (e2, "bob")):
        assert events[-1]["data"]["status"] == "completed", events[-1]["data"]["result"]
        result = next(e for e in events if e["type"] == "tool_call_result")["data"]
        assert result["tool_name"] == "whoami" and result["graph_node_id"] == "gi-tools"
        assert user in json.dumps(result["result"])
    assert {c.user for c in mcp_server.calls if c.name == "whoami"} == {"alice", "bob"}
    everything = json.dumps(e1 + e2) + json.dumps(api.get(f"/activity/{agent['id']}/{t1['id']}").json())
    assert "tok-alice" not in everything and "tok-bob" not in everything
    assert e1[-1]["data"]["used_tools"] == ["whoami"]


def test_a_rejected_token_becomes_an_auth_event_not_a_crash(daphne_server, mcp_server):
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    marker = f"[bad-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("I could not use the tools.")]}) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(mcp_server.url))
        task = start(api, agent, f"{marker} who?", user_tokens={"gi-tools": "tok-wrong"})
        events = sse(daphne_server, alice, task["id"])
    auth = next(e for e in events if e["type"] == "auth_event")["data"]
    assert auth["type"] == "token_issue"
    assert "rejected the token" in auth["data"]["message"]
    assert events[-1]["data"]["status"] == "completed"
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    assert any(m.get("type") == "token_issue" for m in log)
    assert "tok-wrong" not in json.dumps(events) + json.dumps(log)


def test_a_tool_error_is_fed_back_and_recorded(daphne_server, mcp_server):
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    marker = f"[fail-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(
        scripts={marker: [Turn.tool("fail", {"message": "disk full"}), Turn.reply("It failed.")]}
    ) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(mcp_server.url))
        task = start(api, agent, f"{marker} try", user_tokens={"gi-tools": "tok-alice"})
        events = sse(daphne_server, alice, task["id"])
        second = model.requests[1]
    result = next(e for e in events if e["type"] == "tool_call_result")["data"]
    assert result["is_error"] is True and "disk full" in json.dumps(result["result"])
    assert "disk full" in json.dumps(second.tool_results)
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    call = next(m for m in log if "tool_name" in m)
    assert call["is_error"] is True and call["payload"] == {"message": "disk full"}
    assert events[-1]["data"]["status"] == "completed"


def test_an_unreachable_mcp_server_fails_the_task_readably(daphne_server):
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    marker = f"[down-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.reply("unused")]}) as model:
        agent = builtin_agent(api, model, graph=mcp_graph("http://127.0.0.1:9/mcp"))
        task = start(api, agent, f"{marker} go", user_tokens={"gi-tools": "tok-alice"})
        events = sse(daphne_server, alice, task["id"])
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert "MCP server Tools (http://127.0.0.1:9/mcp) is unreachable" in final["result"]


def test_stop_aborts_an_in_flight_tool_call(daphne_server, mcp_server):
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    marker = f"[slow-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.tool("slow", {"seconds": 30}), Turn.reply("unused")]}) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(mcp_server.url))
        task = start(api, agent, f"{marker} go", user_tokens={"gi-tools": "tok-alice"})
        mcp_server.wait_for(lambda: any(c.name == "slow" for c in mcp_server.calls), timeout=20)
        assert api.delete(f"/agent-execution/{task['id']}").json()["status"] == "stopped"
        mcp_server.wait_for(
            lambda: any(c.name == "slow" and c.status == "cancelled" for c in mcp_server.calls), timeout=10
        )
    log = api.get(f"/activity/{agent['id']}/{task['id']}").json()["messages"]
    call = next(m for m in log if m.get("tool_name") == "slow")
    assert call["is_error"] is True and call["status"] == "aborted"


def test_an_mcp_url_with_a_key_in_its_query_never_reaches_the_server_log(daphne_server, mcp_server):
    """The HTTP clients log each request's full URL at INFO; the server keeps them at WARNING."""
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    secret = f"qs-{uuid.uuid4().hex}"
    marker = f"[qs-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [Turn.tool("whoami", {}), Turn.reply("Done.")]}) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(f"{mcp_server.url}?api_key={secret}"))
        task = start(api, agent, f"{marker} who?", user_tokens={"gi-tools": "tok-alice"})
        events = sse(daphne_server, alice, task["id"])
    assert events[-1]["data"]["status"] == "completed", events[-1]["data"]["result"]
    assert any(e["type"] == "tool_call_result" for e in events)
    log = daphne_server.log_text()
    assert " INFO " in log  # the server logs at INFO: the request lines below would have been kept
    assert model.url.split("//")[1] not in log  # no request line for the model either
    assert secret not in log


def test_a_redirect_with_a_key_in_its_location_never_reaches_the_server_log(daphne_server):
    """The MCP client logs a redirect it does not follow at WARNING, with its Location (its user part
    and query left out by the client itself, and by our log format: tests/test_log_format.py)."""
    import http.server
    import threading

    secret = f"loc-{uuid.uuid4().hex}"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307)  # to another origin (loopback): the client does not follow it
            self.send_header("Location", f"http://user:{secret}-pw@127.0.0.2:9/mcp?token={secret}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_DELETE = do_POST

        def log_message(self, *args):
            pass

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    alice = daphne_server.account("MCP Org", "alice@mcp.test")
    api = daphne_server.client(alice)
    marker = f"[loc-{uuid.uuid4().hex[:6]}]"
    try:
        with ScriptedModel(scripts={marker: [Turn.reply("Done.")]}) as model:
            url = f"http://127.0.0.1:{redirector.server_address[1]}/mcp"
            agent = builtin_agent(api, model, graph=mcp_graph(url))
            task = start(api, agent, f"{marker} hi", user_tokens={"gi-tools": "tok-alice"})
            events = sse(daphne_server, alice, task["id"])
    finally:
        redirector.shutdown()
    assert events[-1]["type"] == "task_finished"
    log = daphne_server.log_text()
    assert "Redirect to http://127.0.0.2:9/mcp" in log  # the warning is there, without the secret parts
    assert secret not in log

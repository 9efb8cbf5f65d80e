"""The runtime calls MCP servers with the vault's stored token of the task's user, and only theirs."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.test_runtime_mcp import mcp_graph, start
from tests.test_runtime_run import builtin_agent, sse
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


def user(name: str) -> dict:
    return {"id": name, "email": f"{name}@vault.test"}


def whoami_results(events: list[dict]) -> list[str]:
    return [json.dumps(e["data"]["result"]) for e in events if e["type"] == "tool_call_result"]


def test_it_calls_the_mcp_server_with_the_stored_token_of_the_tasks_user(daphne_server, mcp_server):
    service = daphne_server.account("Vault Org", "owner@vault.test")
    api = daphne_server.client(service)
    dana, erin = f"u-dana-{uuid.uuid4().hex[:6]}", f"u-erin-{uuid.uuid4().hex[:6]}"
    m1, m2, m3 = (f"[{n}-{uuid.uuid4().hex[:6]}]" for n in ("give", "again", "other"))
    script = {
        m1: [Turn.tool("whoami", {}), Turn.reply("Done.")],
        m2: [Turn.tool("whoami", {}), Turn.reply("Done again.")],
        m3: [Turn.reply("I could not use the tools.")],
    }
    with ScriptedModel(scripts=script) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(mcp_server.url))
        given = start(
            api,
            agent,
            m1,
            input={"text": m1, "user": user(dana)},
            user_tokens={"gi-tools": "tok-alice"},
        )
        assert sse(daphne_server, service, given["id"])[-1]["data"]["status"] == "completed"
        again = start(api, agent, m2, input={"text": m2, "user": user(dana)})
        later = sse(daphne_server, service, again["id"])
        other = start(api, agent, m3, input={"text": m3, "user": user(erin)})
        theirs = sse(daphne_server, service, other["id"])
    assert later[-1]["data"]["status"] == "completed", later[-1]["data"]["result"]
    assert "alice" in whoami_results(later)[0]  # called as dana, with the token she gave once
    assert [c.user for c in mcp_server.calls if c.name == "whoami"] == ["alice", "alice"]
    assert theirs[-1]["data"]["status"] == "completed", theirs[-1]["data"]["result"]
    auth = next(e for e in theirs if e["type"] == "auth_event")["data"]
    assert auth["type"] == "token_issue" and "sign in" in auth["data"]["message"]
    assert "tok-alice" not in json.dumps(later + theirs)

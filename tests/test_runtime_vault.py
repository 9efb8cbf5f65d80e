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


def whoami_users(mcp_server) -> list[str | None]:
    return [c.user for c in mcp_server.calls if c.name == "whoami"]


def follow_up(api, agent, task_id: str, text: str, **extra) -> dict:
    r = api.post(
        f"/agent-execution/{agent['id']}",
        json={"id": task_id, "input": {"text": text}, "events_streaming": True, **extra},
    )
    assert r.status_code == 200, r.text
    return r.json()


# Header-form tokens are used by the task but never held in the vault: only the task carries them.
ALICES_HEADERS = {"gi-tools": {"Authorization": "Bearer tok-alice"}}


def test_a_follow_up_for_another_user_does_not_keep_the_first_users_tokens(daphne_server, mcp_server):
    service = daphne_server.account("Vault Org", "owner@vault.test")
    api = daphne_server.client(service)
    dana, erin = f"u-dana-{uuid.uuid4().hex[:6]}", f"u-erin-{uuid.uuid4().hex[:6]}"
    marker = f"[switch-{uuid.uuid4().hex[:6]}]"
    script = [
        Turn.tool("whoami", {}),
        Turn.reply("You are alice."),
        Turn.reply("I could not use the tools."),
        Turn.tool("whoami", {}),
        Turn.reply("You are alice again."),
    ]
    with ScriptedModel(scripts={marker: script}) as model:
        agent = builtin_agent(api, model, graph=mcp_graph(mcp_server.url))
        task = start(
            api, agent, marker, input={"text": marker, "user": user(dana)}, user_tokens=ALICES_HEADERS
        )
        first = sse(daphne_server, service, task["id"])
        assert whoami_users(mcp_server) == ["alice"]
        follow_up(
            api, agent, task["id"], "and now for erin", input={"text": "and now for erin", "user": user(erin)}
        )
        second = sse(daphne_server, service, task["id"], last=len(first))
        assert whoami_users(mcp_server) == ["alice"]  # erin's turn did not call as dana
        auth = next(e for e in second if e["type"] == "auth_event")["data"]
        assert auth["type"] == "token_issue"
        back = follow_up(
            api,
            agent,
            task["id"],
            "dana again",
            input={"text": "dana again", "user": user(dana)},
            user_tokens=ALICES_HEADERS,
        )
        third = sse(daphne_server, service, task["id"], last=len(first) + len(second))
    assert second[-1]["data"]["status"] == "completed" and second[-1]["data"]["input"]["user"]["id"] == erin
    assert third[-1]["data"]["status"] == "completed", third[-1]["data"]["result"]
    assert back["input"]["user"]["id"] == dana and whoami_users(mcp_server) == ["alice", "alice"]


def test_a_members_own_follow_up_keeps_their_tokens(daphne_server, mcp_server):
    owner = daphne_server.account("Vault Org", "owner@vault.test")
    bob = daphne_server.account("Vault Org", "bob@vault.test", role="member")
    api = daphne_server.client(bob)
    marker = f"[own-{uuid.uuid4().hex[:6]}]"
    script = [
        Turn.tool("whoami", {}),
        Turn.reply("You are bob."),
        Turn.tool("whoami", {}),
        Turn.reply("Still bob."),
    ]
    with ScriptedModel(scripts={marker: script}) as model:
        agent = builtin_agent(daphne_server.client(owner), model, graph=mcp_graph(mcp_server.url))
        task = start(api, agent, marker, user_tokens={"gi-tools": {"Authorization": "Bearer tok-bob"}})
        first = sse(daphne_server, bob, task["id"])
        again = follow_up(api, agent, task["id"], "once more")
        second = sse(daphne_server, bob, task["id"], last=len(first))
    assert second[-1]["data"]["status"] == "completed", second[-1]["data"]["result"]
    assert not [e for e in second if e["type"] == "auth_event"]
    assert whoami_users(mcp_server) == ["bob", "bob"]
    assert (
        again["input"]["user"]["id"].startswith("mbr_")
        and again["input"]["user"]["email"] == "bob@vault.test"
    )

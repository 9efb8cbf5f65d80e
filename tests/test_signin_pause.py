"""A task whose user is not connected to an MCP server that supports sign-in pauses before its first
model request, asks for the sign-in with a link, and resumes by itself once the user signs in; the
runtime refreshes an expired connection and retries once on a 401. Real runtime, real authorization
server and MCP server, scripted model on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from console import oauth
from console.models import Agent, GraphItem, UserToken
from tasks_app import actions
from tasks_app.actions import signin as actions_signin
from tasks_app.models import ActivityEntry, Task, TaskEvent
from tasks_app.runtime import runner
from tests.conftest import create_body
from tests.test_oauth_signin import REDIRECT, callback_params, owner
from tests.tools.oauth_server import OAuthMCP
from tests.tools.scripted_model import Turn


@pytest.fixture
def server() -> Iterator[OAuthMCP]:
    with OAuthMCP() as running:
        yield running


@pytest.fixture
def agent(alice, server, scripted_model) -> Agent:
    r = alice.post(
        "/api/v1/agents",
        {
            "name": "Signed",
            "framework": "builtin",
            "model_provider": "openai_compatible",
            "model_name": "scripted",
            "model_base_url": scripted_model.base_url,
            "model_api_key": "sk-model",
            "graph": [
                {
                    "id": "gi-oauth",
                    "type": "mcp",
                    "name": "Tools",
                    "settings": {
                        "mcp_settings": {"url": server.mcp_url, "name": "Tools", "auth_type": "oauth2"}
                    },
                }
            ],
        },
    )
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def run(task_id: str, worker: str = "w1") -> Task:
    assert actions.claim_task(task_id, worker, 60) is not None
    async_to_sync(runner.run_turn)(task_id, worker)
    return Task.objects.get(pk=task_id)


def connect(server: OAuthMCP, persona, user: str | None = None) -> UserToken:
    item = GraphItem.objects.get(key="gi-oauth")
    url = oauth.start(
        organization_id=persona.org.id,
        owner=owner(persona),
        item=item,
        redirect_uri=REDIRECT,
        session_key="s",
    )
    return oauth.finish(callback_params(server.approve(url, user or persona.name)), "s")[1]


def events(task_id: str) -> list[tuple[str, dict]]:
    return [(e.type, e.data) for e in TaskEvent.objects.filter(task_id=task_id).order_by("seq")]


def test_a_task_of_an_unconnected_member_pauses_with_a_sign_in_link_and_resumes_after_sign_in(
    alice, agent, server, scripted_model
):
    scripted_model.set_script([Turn.tool("whoami", {}), Turn.reply("Done.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("who am I?")).json()
    paused = run(task["id"])
    assert paused.status == "paused" and scripted_model.requests == []  # before any model request
    auth = [d for t, d in events(task["id"]) if t == "auth_event"]
    assert auth[-1]["type"] == "login_required" and auth[-1]["data"]["server_name"] == "Tools"
    assert oauth.LINK_PATH in auth[-1]["data"]["url"]
    assert ActivityEntry.objects.filter(task_id=task["id"], kind="auth").count() == 1
    assert [w.task_id for w in actions_signin.waiting(alice.org.id, owner(alice))] == [task["id"]]

    row = connect(server, alice)
    assert actions_signin.resume_signed_in(alice.org.id, owner(alice), "gi-oauth", "Tools") == [task["id"]]
    assert Task.objects.get(pk=task["id"]).status == "pending"
    done = run(task["id"], "w2")
    assert done.status == "completed", done.result
    assert server.calls == [("whoami", "alice")]
    streamed = json.dumps(events(task["id"]))
    assert row.reveal() not in streamed and row.reveal_refresh() not in streamed
    assert '"token_ready"' in streamed
    assert [t for t, _ in events(task["id"])].count("task_created") == 1


def test_a_stop_on_a_paused_task_stops_it(alice, agent, scripted_model):
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    assert run(task["id"]).status == "paused"
    stopped = actions.stop_task(actions.Actor(alice.org.id, "owner"), task["id"])
    assert stopped.status == "stopped" and actions_signin.waiting(alice.org.id, owner(alice)) == []


def test_a_paused_task_fails_clearly_when_nobody_signs_in_in_time(alice, agent, scripted_model, settings):
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    run(task["id"])
    from tasks_app.signin_models import SignInWait

    SignInWait.objects.update(deadline=timezone.now() - timedelta(seconds=1))
    assert actions_signin.fail_expired_waits() == [task["id"]]
    failed = Task.objects.get(pk=task["id"])
    assert failed.status == "failed" and "Nobody signed in to Tools" in failed.result


def test_a_server_whose_sign_in_cannot_be_discovered_runs_without_it(
    alice, agent, scripted_model, mcp_server
):
    GraphItem.objects.filter(key="gi-oauth").update(
        settings={"mcp_settings": {"url": mcp_server.url, "name": "Plain", "auth_type": "api_key"}}
    )
    scripted_model.set_script([Turn.reply("Without tools.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    done = run(task["id"])
    assert done.status == "completed"
    auth = [d for t, d in events(task["id"]) if t == "auth_event"]
    assert auth[-1]["type"] == "token_issue" and "running without it" in auth[-1]["data"]["message"]


def test_the_runtime_refreshes_an_expired_connection_before_connecting(alice, agent, server, scripted_model):
    row = connect(server, alice)
    server.provider.expire_all()
    UserToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(seconds=5))
    scripted_model.set_script([Turn.tool("whoami", {}), Turn.reply("Done.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    assert run(task["id"]).status == "completed"
    assert server.provider.refreshes == 1 and server.calls == [("whoami", "alice")]


def test_the_runtime_refreshes_once_on_a_401_and_carries_on(alice, agent, server, scripted_model):
    connect(server, alice)
    server.provider.expire_all()  # the vault still thinks the token is good for an hour
    scripted_model.set_script([Turn.tool("whoami", {}), Turn.reply("Done.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    assert run(task["id"]).status == "completed"
    assert server.provider.refreshes == 1 and server.calls == [("whoami", "alice")]


def test_two_members_tasks_call_the_same_server_as_themselves(alice, bob, agent, server, scripted_model):
    connect(server, alice)
    connect(server, bob)
    for key in ("[alice]", "[bob]"):
        scripted_model.set_script([Turn.tool("whoami", {}), Turn.reply("Done.")], key=key)
    first = alice.post(f"/api/agent-execution/{agent.id}", create_body("[alice] go")).json()
    second = bob.post(f"/api/agent-execution/{agent.id}", create_body("[bob] go")).json()
    assert actions.claim_task(first["id"], "w1", 60) and actions.claim_task(second["id"], "w2", 60)

    async def both() -> None:  # the two turns run interleaved on one event loop, as in a worker
        await asyncio.gather(runner.run_turn(first["id"], "w1"), runner.run_turn(second["id"], "w2"))

    async_to_sync(both)()
    assert {Task.objects.get(pk=t["id"]).status for t in (first, second)} == {"completed"}
    assert sorted(server.calls) == [("whoami", "alice"), ("whoami", "bob")]


def test_a_token_that_expires_mid_run_is_refreshed_once_and_the_call_retried(
    alice, agent, server, scripted_model
):
    connect(server, alice)
    server.on_hold = server.provider.expire_all  # the token dies while the task is busy
    scripted_model.set_script(
        [Turn.tool("whoami", {}), Turn.tool("hold", {}), Turn.tool("whoami", {}), Turn.reply("ok")]
    )
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    done = run(task["id"])
    assert done.status == "completed", done.result
    assert server.calls == [("whoami", "alice"), ("hold", None), ("whoami", "alice")]
    assert server.provider.refreshes == 1
    results = [d for t, d in events(task["id"]) if t == "tool_call_result"]
    assert not any(r.get("is_error") for r in results)


def test_the_connections_page_counts_the_waiting_tasks_in_words(alice, agent, server, scripted_model):
    from console.web.connections import carry_on
    from tests.console_helpers import signed_in

    scripted_model.set_script([Turn.tool("whoami", {}), Turn.reply("Done.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("who am I?")).json()
    assert run(task["id"]).status == "paused"
    page = signed_in(alice).get("/connections/").content.decode()
    assert "1 task waits for this sign-in" in page and "task(s)" not in page
    assert (carry_on(1), carry_on(3)) == ("1 waiting task carries on.", "3 waiting tasks carry on.")

"""An MCP server's tool list is kept a few seconds per (organization, server, credential): a run that
finds it opens no MCP session unless the model calls one of the server's tools. Real runtime (the
worker's turn, in this process), real MCP server and scripted model on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync

from console.models import Agent
from tasks_app import actions
from tasks_app.models import Task, TaskEvent
from tasks_app.runtime import runner
from tasks_app.runtime.mcp import TOOL_LISTS
from tests.conftest import create_body
from tests.tools.mcp_server import AuthMCPServer
from tests.tools.scripted_model import Turn


@pytest.fixture(autouse=True)
def _fresh_lists(settings) -> Iterator[None]:
    settings.MCP_TOOLS_CACHE_SECONDS = 60
    TOOL_LISTS.clear()
    yield
    TOOL_LISTS.clear()


@pytest.fixture
def server() -> Iterator[AuthMCPServer]:
    with AuthMCPServer({"tok-alice": "alice", "tok-bob": "bob"}) as running:
        yield running


def make_agent(persona, server: AuthMCPServer, model, allowed: list[str] | None = None) -> Agent:
    mcp_settings = {"url": server.url, "name": "Tools", "auth_type": "api_key"}
    if allowed is not None:
        mcp_settings["allowed_tools"] = allowed
    r = persona.post(
        "/api/v1/agents",
        {
            "name": "Lazy",
            "framework": "builtin",
            "model_provider": "openai_compatible",
            "model_name": "scripted",
            "model_base_url": model.base_url,
            "model_api_key": "sk-model",
            "graph": [
                {"id": "gi-tools", "type": "mcp", "name": "Tools", "settings": {"mcp_settings": mcp_settings}}
            ],
        },
    )
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


HELLO = [Turn.reply("Hello.")]


def run(
    persona, agent: Agent, model, text: str, script: list | None = None, token: str = "tok-alice"
) -> Task:
    """One turn of a new task as the worker runs it; `script` (a fresh list each run: turns are used up)."""
    model.set_script(list(script or HELLO))
    body = create_body(text, user_tokens={"gi-tools": token})
    task = persona.post(f"/api/agent-execution/{agent.id}", body).json()
    assert actions.claim_task(task["id"], "w1", 60) is not None
    async_to_sync(runner.run_turn)(task["id"], "w1")
    return Task.objects.get(pk=task["id"])


def events(task: Task) -> list[tuple[str, dict]]:
    return [(e.type, e.data) for e in TaskEvent.objects.filter(task_id=task.id).order_by("seq")]


def offered(model) -> list[str]:
    """The tool names the model was offered in its last request."""
    return sorted(t["function"]["name"] for t in model.requests[-1].body.get("tools") or [])


def test_a_task_that_calls_no_tool_opens_no_session_once_the_list_is_kept(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model)
    first = run(alice, agent, scripted_model, "hi")
    assert first.status == "completed" and server.sessions == 1  # first contact checks the token
    requests = len(server.http)
    second = run(alice, agent, scripted_model, "hi again")
    assert second.status == "completed" and second.result == "Hello."
    assert server.sessions == 1 and len(server.http) == requests  # not a single request
    assert offered(scripted_model) == ["add", "echo", "fail", "slow", "whoami"]  # from the kept list


def test_a_task_that_calls_a_tool_opens_one_session(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "warm up")
    script = [Turn.tool("whoami", {}), Turn.tool("add", {"a": 2, "b": 3}), Turn.tool("whoami", {})]
    task = run(alice, agent, scripted_model, "who?", [*script, Turn.reply("Done.")])
    assert task.status == "completed", task.result
    assert server.sessions == 2  # one for the warm-up's first contact, one for this run's three calls
    assert [(c.name, c.user, c.status) for c in server.calls] == [
        ("whoami", "alice", "completed"),
        ("add", "alice", "completed"),
        ("whoami", "alice", "completed"),
    ]
    found = events(task)
    results = [d for t, d in found if t == "tool_call_result"]
    assert [r["graph_node_id"] for r in results] == ["gi-tools"] * 3  # tools map to their graph item
    assert not any(r.get("is_error") for r in results) and "alice" in json.dumps(results[0]["result"])
    assert "tok-alice" not in json.dumps(found) + json.dumps(task.result)
    assert set(task.used_tools) == {"add", "whoami"}


def test_the_list_is_kept_per_credential(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "alice warms up")
    assert server.sessions == 1
    run(
        alice, agent, scripted_model, "bob's first", token="tok-bob"
    )  # another credential: its own first contact
    assert server.sessions == 2 and server.http[-1].user == "bob"
    script = [Turn.tool("whoami", {}), Turn.reply("Done.")]
    task = run(alice, agent, scripted_model, "bob again", script, token="tok-bob")
    assert task.status == "completed", task.result
    assert server.sessions == 3 and [(c.name, c.user) for c in server.calls] == [("whoami", "bob")]
    assert len(TOOL_LISTS) == 2
    run(
        alice, agent, scripted_model, "a wrong token", token="tok-wrong"
    )  # refused: runs without the server, keeps nothing
    assert len(TOOL_LISTS) == 2
    again = run(alice, agent, scripted_model, "a wrong token again", token="tok-wrong")
    kinds = [d["type"] for t, d in events(again) if t == "auth_event"]
    assert kinds == ["token_issue"] and again.status == "completed"


def test_an_expired_list_is_listed_again(alice, server, scripted_model, monkeypatch):
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "one")
    run(alice, agent, scripted_model, "two")
    assert server.sessions == 1
    monkeypatch.setattr(TOOL_LISTS, "clock", lambda: time.monotonic() + 61)  # a minute later
    run(alice, agent, scripted_model, "three")
    assert server.sessions == 2
    run(alice, agent, scripted_model, "four")  # listed again at "three": kept for another minute
    assert server.sessions == 2


def test_zero_seconds_lists_on_every_run(alice, server, scripted_model, settings):
    settings.MCP_TOOLS_CACHE_SECONDS = 0
    agent = make_agent(alice, server, scripted_model)
    for text in ("one", "two", "three"):
        assert run(alice, agent, scripted_model, text).status == "completed"
    assert server.sessions == 3


def test_allowed_tools_still_filter_a_kept_list(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model, allowed=["add"])
    run(alice, agent, scripted_model, "one")
    assert offered(scripted_model) == ["add"]
    run(alice, agent, scripted_model, "two")
    assert offered(scripted_model) == ["add"] and server.sessions == 1


def test_a_token_revoked_since_the_list_was_kept_fails_the_task_clearly(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "warm up")
    server.remove_user("tok-alice")
    task = run(alice, agent, scripted_model, "who?", [Turn.tool("whoami", {}), Turn.reply("unused")])
    assert task.status == "failed"
    assert task.result == f"MCP server Tools ({server.url}) rejected the credentials (HTTP 401)"
    assert server.calls == [] and "tok-alice" not in json.dumps(events(task))
    after = run(
        alice, agent, scripted_model, "after"
    )  # the list was forgotten: the next run checks the token first
    assert [d["type"] for t, d in events(after) if t == "auth_event"] == ["token_issue"]


def test_a_server_gone_since_the_list_was_kept_fails_the_task_clearly(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "warm up")
    server.stop()
    task = run(alice, agent, scripted_model, "who?", [Turn.tool("whoami", {}), Turn.reply("unused")])
    assert task.status == "failed"
    assert task.result.startswith(f"MCP server Tools ({server.url}) is unreachable"), task.result


def test_parallel_calls_share_the_one_session_they_open(alice, server, scripted_model):
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "warm up")
    both = Turn.tools(("whoami", {}), ("add", {"a": 1, "b": 2}), ("echo", {"text": "x"}))
    task = run(alice, agent, scripted_model, "all at once", [both, Turn.reply("Done.")])
    assert task.status == "completed", task.result
    assert server.sessions == 2 and sorted(c.name for c in server.calls) == ["add", "echo", "whoami"]


def cancel_during_a_slow_call(alice, server, scripted_model, *, shutdown: bool = False) -> str:
    """A claimed run cancelled while an MCP tool call runs, as the worker cancels it; its task id.

    With `shutdown`, the run is first marked as a worker shutdown's (runner.release_on_cancel) and
    the cancel carries no message (a step inside pydantic-ai may re-raise a fresh CancelledError).
    """
    agent = make_agent(alice, server, scripted_model)
    run(alice, agent, scripted_model, "warm up")
    scripted_model.set_script([Turn.tool("slow", {"seconds": 30}), Turn.reply("Resumed.")])
    created = alice.post(
        f"/api/agent-execution/{agent.id}", create_body("go", user_tokens={"gi-tools": "tok-alice"})
    )
    task_id = created.json()["id"]
    assert actions.claim_task(task_id, "w1", 60) is not None

    async def cancel_while_calling() -> None:
        running = asyncio.create_task(runner.run_turn(task_id, "w1"))
        await server.wait_for_async(lambda: any(c.name == "slow" for c in server.calls), timeout=20)
        if shutdown:
            runner.release_on_cancel(task_id)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    async_to_sync(cancel_while_calling)()
    return task_id


def test_a_stop_cancels_a_call_on_a_lazily_opened_session(alice, server, scripted_model):
    task_id = cancel_during_a_slow_call(alice, server, scripted_model)
    server.wait_for(
        lambda: any(c.name == "slow" and c.status == "cancelled" for c in server.calls), timeout=10
    )
    task = Task.objects.get(pk=task_id)
    assert task.status == "stopped"
    call = next(d for t, d in events(task) if t == "tool_call_result")
    assert call["status"] == "aborted" and server.sessions == 2


def test_a_worker_shutdown_hands_the_task_back_even_if_the_cancel_loses_its_message(
    alice, server, scripted_model
):
    """A shutdown marks its runs first (runner.release_on_cancel): a cancel that reaches run_turn
    without SHUTDOWN still releases the task instead of stopping it."""
    task_id = cancel_during_a_slow_call(alice, server, scripted_model, shutdown=True)
    task = Task.objects.get(pk=task_id)
    assert task.status == "pending" and task.lease_owner in (None, "")
    assert not task.is_manually_stopped
    assert task_id not in runner._releasing  # the mark does not outlive its run


def test_a_first_run_with_no_sub_agent_in_its_graph_never_asks_for_sub_tasks(alice, server, scripted_model):
    """Create, claim, run and finish of a first turn whose graph has only an MCP server: none of its
    snapshots (created, claimed, finished) asks for sub-tasks; the finish is told by the runner."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    agent = make_agent(alice, server, scripted_model)
    with CaptureQueriesContext(connection) as ctx:
        task = run(alice, agent, scripted_model, "hi")
    assert task.status == "completed", task.result
    assert [t for t, _ in events(task)][-1] == "task_finished"
    assert any('"tasks_app_task"' in q["sql"] and q["sql"].startswith("UPDATE") for q in ctx.captured_queries)
    assert not [q["sql"] for q in ctx.captured_queries if '"parent_id" =' in q["sql"]]

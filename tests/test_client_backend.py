"""Backend().get_args(): agno Agent arguments from the live server, run end to end in agno's venv.

agno is not installed next to the server, so the agno side runs in the official SDK's venv (agno
2.5.14, mcp<2, made by tests/test_sdk_compat.py's helper) with this project on PYTHONPATH. The
script below builds the args the way a user's worker does, runs the agent against a ScriptedModel
that calls the MCP tool `whoami`, and prints what it saw as JSON; the tests assert on that report
and on what the MCP server and the model recorded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks_app.client import Backend, Configuration, ModuleException
from tests.live import ROOT, LiveServer, free_port
from tests.test_sdk_compat import SDK_VENV, ensure_sdk_venv
from tests.tools.fixtures import MCP_TOKENS
from tests.tools.mcp_server import AuthMCPServer
from tests.tools.scripted_model import ScriptedModel, Turn

AGNO_INSTALL = 'pip install agno "mcp<2"'
INSTRUCTIONS = "Be brief. Answer with the user's name."

# Runs in the SDK venv: reads params (JSON) on stdin, prints {section: {ok, value | error}}.
SCRIPT = r"""
import asyncio, json, os, sys, traceback

from agno.agent import Agent

from tasks_app.client import Backend, Tasks

params = json.load(sys.stdin)
report = {}


def section(name, fn):
    try:
        report[name] = {"ok": True, "value": fn()}
    except BaseException as exc:
        report[name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "classes": [c.__name__ for c in type(exc).__mro__],
            "status_code": getattr(exc, "status_code", None),
            "traceback": traceback.format_exc(),
        }


def describe(args):
    model = args["model"]
    return {
        "keys": sorted(args),
        "id": args["id"],
        "name": args["name"],
        "model": {
            "class": type(model).__name__,
            "id": model.id,
            "base_url": None if getattr(model, "base_url", None) is None else str(model.base_url),
            "api_key": model.api_key,
        },
        "instructions": args.get("instructions"),
        "additional_context": args.get("additional_context"),
        "telemetry": args.get("telemetry"),
        "tools": [
            {
                "class": type(t).__name__,
                "transport": t.transport,
                "url": t.server_params.url,
                "headers": t.server_params.headers,
            }
            for t in args["tools"]
        ],
    }


def alice():
    task = Tasks().get(params["tasks"]["alice"])
    args = Backend().get_args(agent_id=params["agent_id"], task=task)
    seen = describe(args)
    seen["task_user_tokens"] = task.user_tokens
    agent = Agent(**args)
    run = asyncio.run(agent.arun(input=task.to_message()))
    seen["content"] = run.content
    seen["tool_calls"] = [(t.tool_name, t.result) for t in run.tools or []]
    return seen


def aget(task_key):
    async def go():
        task = await Tasks().aget(params["tasks"][task_key])
        return describe(await Backend().aget_args(task=task))  # the agent is the task's

    return lambda: asyncio.run(go())


section("alice", alice)
section("no_user", aget("no_user"))
section("carol", aget("carol"))
section("dave", aget("dave"))
section("openai_no_key", lambda: Backend().get_args(agent_id=params["openai_agent_id"]))
section(
    "openai_with_key",
    lambda: describe(Backend().get_args(agent_id=params["openai_agent_id"], model_api_key="sk-test")),
)
section("anthropic", lambda: describe(Backend().get_args(agent_id=params["anthropic_agent_id"])))
section("unknown_agent", lambda: Backend().get_args(agent_id="no-such-agent"))
print(json.dumps(report, default=str))
"""


def test_without_agno_get_args_says_what_to_install():
    if importlib.util.find_spec("agno") is not None:
        pytest.skip("agno is installed in this environment")
    backend = Backend(Configuration(base_url="http://127.0.0.1:9/api", api_key="k"))  # never reached
    with pytest.raises(ModuleException) as caught:
        backend.get_args(agent_id="any")
    assert isinstance(caught.value, ImportError)
    assert AGNO_INSTALL in caught.value.description
    assert "No module named 'agno'" in caught.value.description


async def test_without_agno_aget_args_says_what_to_install():
    if importlib.util.find_spec("agno") is not None:
        pytest.skip("agno is installed in this environment")
    with pytest.raises(ImportError) as caught:
        await Backend(Configuration(base_url="http://127.0.0.1:9/api", api_key="k")).aget_args(agent_id="x")
    assert AGNO_INSTALL in str(caught.value)


# ---- live, in the SDK venv ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agno_python() -> Path:
    try:
        return ensure_sdk_venv(SDK_VENV)
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(
            f"the official SDK's venv with agno ({SDK_VENV}) is not available and could not be made: {exc}"
        )


@pytest.fixture(scope="module")
def report(daphne_server, agno_python, mcp_server_session) -> Iterator[dict[str, Any]]:
    """Run the script once; its sections plus what the MCP server and the model recorded."""
    mcp_server = mcp_server_session
    mcp_server.set_users(MCP_TOKENS)
    mcp_server.reset()
    with ScriptedModel([Turn.tool("whoami"), Turn.reply("You are alice.")]) as model:
        yield run_script(daphne_server, agno_python, mcp_server, model)


def run_script(server: LiveServer, python: Path, mcp_server: AuthMCPServer, scripted_model: ScriptedModel):
    owner = server.account("Backend Org", "owner@backend.test")
    suffix = uuid.uuid4().hex[:8]
    who, down = f"gi-who-{suffix}", f"gi-down-{suffix}"
    with server.client(owner) as api:

        def agent(**body: Any) -> str:
            r = api.post(
                "/v1/agents", json={"name": f"Agent {uuid.uuid4().hex[:8]}", "framework": "external", **body}
            )
            assert r.status_code == 201, r.text
            return r.json()["id"]

        def task(agent_id: str, user: str | None, tokens: dict[str, str] | None = None) -> str:
            body: dict[str, Any] = {"input": {"text": "Who am I?"}}
            if user:
                body["input"]["user"] = {"id": user, "email": f"{user}@example.com"}
            if tokens:
                body["user_tokens"] = tokens
            r = api.post(f"/agent-execution/{agent_id}", json=body)
            assert r.status_code == 200, r.text
            return r.json()["id"]

        agent_id = agent(
            instructions=INSTRUCTIONS,
            model_provider="openai_compatible",
            model_name="scripted-model",
            model_base_url=scripted_model.base_url,
            graph=[
                {
                    "id": who,
                    "type": "mcp",
                    "name": "Who",
                    "settings": {"mcp_settings": {"url": mcp_server.url, "auth_type": "oauth2"}},
                },
                {  # nothing listens there
                    "id": down,
                    "type": "mcp",
                    "name": "Down",
                    "settings": {"mcp_settings": {"url": f"http://127.0.0.1:{free_port()}/mcp"}},
                },
            ],
        )
        params = {
            "agent_id": agent_id,
            "tasks": {
                "alice": task(agent_id, "u-alice", {who: "tok-alice"}),
                "no_user": task(agent_id, None),
                "carol": task(agent_id, "u-carol"),
                "dave": task(agent_id, "u-dave", {who: "tok-not-known"}),
            },
            "openai_agent_id": agent(model_provider="openai", model_name="gpt-4o-mini"),
            "anthropic_agent_id": agent(model_provider="anthropic", model_name="claude-sonnet-4-5"),
        }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "XPANDER_", "PYTHON", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        XPANDER_BASE_URL=server.api,
        XPANDER_API_KEY=owner.api_key,
        XPANDER_ORGANIZATION_ID=owner.organization_id,
        ANTHROPIC_API_KEY="sk-ant-test",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    out = subprocess.run(
        [str(python), "-c", SCRIPT],
        input=json.dumps(params),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"the agno script crashed:\n{out.stderr[-5000:]}"
    return {
        "sections": json.loads(out.stdout.strip().splitlines()[-1]),
        "params": params,
        "mcp_url": mcp_server.url,
        "mcp_calls": mcp_server.calls,
        "mcp_rejected": mcp_server.rejected,
        "model_url": scripted_model.base_url,
        "model_requests": scripted_model.requests,
        "model_errors": scripted_model.errors,
    }


def ok(report: dict[str, Any], name: str) -> dict[str, Any]:
    entry = report["sections"][name]
    if not entry["ok"]:
        pytest.fail(f"section {name!r} raised {entry['error']}\n{entry['traceback']}")
    return entry["value"]


def failed(report: dict[str, Any], name: str) -> dict[str, Any]:
    entry = report["sections"][name]
    assert not entry["ok"], f"section {name!r} should have failed: {entry.get('value')}"
    return entry


@pytest.mark.live
@pytest.mark.sdk
@pytest.mark.timeout(1500)  # a first run installs the SDK venv
def test_get_args_runs_an_agno_agent_with_the_users_mcp_token(report):
    alice = ok(report, "alice")
    assert alice["task_user_tokens"] is None  # the task never carries the token: the server's route does
    assert alice["id"] == report["params"]["agent_id"]
    assert alice["model"] == {
        "class": "OpenAILike",
        "id": "scripted-model",
        "base_url": report["model_url"],
        "api_key": "not-provided",
    }
    assert alice["instructions"] == INSTRUCTIONS
    assert alice["telemetry"] is False
    assert alice["tools"] == [
        {
            "class": "MCPTools",
            "transport": "streamable-http",
            "url": report["mcp_url"],
            "headers": {"Authorization": "Bearer tok-alice"},
        }
    ]
    assert alice["additional_context"].startswith(
        "Unavailable tools this run:\n- Down: temporarily unavailable"
    )
    assert "Who" not in alice["additional_context"]

    # The run: the model asked for whoami, the MCP server saw alice's token, the model answered.
    assert alice["content"] == "You are alice."
    assert alice["tool_calls"] == [["whoami", "alice"]]
    [call] = report["mcp_calls"]
    assert (call.name, call.user, call.status) == ("whoami", "alice", "completed")
    first, second = report["model_requests"]
    assert "Who am I?" in first.user_text
    assert INSTRUCTIONS in json.dumps(first.messages)
    assert "whoami" in first.tool_names
    assert [r["content"] for r in second.tool_results] == ["alice"]
    assert report["model_errors"] == []


@pytest.mark.live
@pytest.mark.sdk
@pytest.mark.timeout(1500)
def test_mcp_servers_without_a_usable_token_are_skipped_with_a_note(report):
    no_user = ok(report, "no_user")
    assert no_user["tools"] == []
    assert "- Who: unavailable - requires a signed-in user" in no_user["additional_context"]
    assert "- Down: temporarily unavailable (could not connect" in no_user["additional_context"]

    carol = ok(report, "carol")  # a user, but no token held for her
    assert carol["tools"] == []
    assert "- Who: unavailable - No token stored for user u-carol" in carol["additional_context"]

    dave = ok(report, "dave")  # the token the server holds is not one the MCP server knows
    assert dave["tools"] == []
    assert "- Who: unavailable - it rejected the user's token (HTTP 401)" in dave["additional_context"]
    rejected = report["mcp_rejected"]
    assert {r.status for r in rejected} == {401}
    assert any(
        r.method == "POST" and r.path == "/mcp" for r in rejected
    )  # dave's token, at the initialize check
    # Besides it, only the server's unauthenticated sign-in discovery (issue 15) is turned away.
    assert all(r.path == "/mcp" or r.path.startswith("/.well-known/") for r in rejected), rejected
    assert [c.user for c in report["mcp_calls"]] == ["alice"]


@pytest.mark.live
@pytest.mark.sdk
@pytest.mark.timeout(1500)
def test_models_and_errors(report):
    missing = failed(report, "openai_no_key")
    assert missing["status_code"] == 401 and "set OPENAI_API_KEY or pass model_api_key" in missing["error"]

    openai = ok(report, "openai_with_key")
    assert openai["model"] == {
        "class": "OpenAIChat",
        "id": "gpt-4o-mini",
        "base_url": None,
        "api_key": "sk-test",
    }
    assert openai["tools"] == [] and openai["instructions"] is None
    assert "additional_context" not in openai["keys"]

    anthropic = report["sections"]["anthropic"]  # the SDK venv has no anthropic package
    if anthropic["ok"]:
        assert anthropic["value"]["model"]["class"] == "Claude"
        assert anthropic["value"]["model"]["api_key"] == "sk-ant-test"
    else:
        assert "ImportError" in anthropic["classes"] and "ModuleException" in anthropic["classes"]
        assert "pip install anthropic" in anthropic["error"]

    unknown = failed(report, "unknown_agent")
    assert unknown["status_code"] == 404 and "Agent no-such-agent not found" in unknown["error"]

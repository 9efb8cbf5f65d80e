"""The official xpander-sdk, unmodified, against a live server: external task reports and the Agno example.

Like tests/test_sdk_compat.py, whose SDK venv and helpers this module reuses, each script runs the
SDK in its own virtual environment and prints a JSON report that the tests assert on:

- tests/sdk/report_example.py: `Task.report_external_task(...)` and `Backend().report_external_task(...)`.
- tests/sdk/agno_example.py: the seed's Agno example end to end, with only the example's environment
  (XPANDER_BASE_URL, XPANDER_API_KEY, XPANDER_ORGANIZATION_ID, OPENAI_API_KEY). The agent's model is
  a ScriptedModel (a real OpenAI-compatible server) that calls the MCP tool `whoami` of an
  AuthMCPServer (a real MCP server checking bearer tokens), then answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests import test_sdk_compat as compat
from tests.live import ROOT, Account, LiveServer
from tests.test_sdk_compat import module_error, section, types
from tests.tools.fixtures import MCP_TOKENS
from tests.tools.mcp_server import AuthMCPServer
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = [pytest.mark.sdk, pytest.mark.live, pytest.mark.timeout(1500)]

sdk_python = compat.sdk_python  # the SDK's venv, installed once (session fixture)

SCRIPTS = ROOT / "tests" / "sdk"
# The SDK's example environment, nothing else: no DJANGO_*, no other XPANDER_* or provider keys.
KEPT_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
USER_TOKEN = "tok-alice"  # what the task brings for its user; the MCP server knows it as "alice"
# The SDK names every MCP tool "mcp_tool_<name>" (agno MCPTools, tool_name_prefix="mcp_tool").
WHOAMI = "mcp_tool_whoami"
ANSWER = "You are alice on the tools server."


def run_script(
    python: Path, script: str, server: LiveServer, account: Account, params: dict[str, Any], **env: str
) -> dict[str, Any]:
    """Run one SDK script against the live server; its JSON report (plus the script's stderr)."""
    environ = {k: v for k, v in os.environ.items() if k in KEPT_ENV}
    environ.update(
        XPANDER_BASE_URL=server.api,
        XPANDER_API_KEY=account.api_key,
        XPANDER_ORGANIZATION_ID=account.organization_id,
        **env,
    )
    out = subprocess.run(
        [str(python), str(SCRIPTS / script)],
        input=json.dumps(params),
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"the SDK script crashed:\n{out.stderr[-5000:]}"
    report = json.loads(out.stdout)
    report["_stderr"] = out.stderr
    return report


def create_agent(server: LiveServer, account: Account, **fields: Any) -> str:
    with server.client(account) as api:
        r = api.post("/v1/agents", json={"name": f"SDK agent {uuid.uuid4().hex[:8]}", **fields})
        assert r.status_code == 201, r.text
        return r.json()["id"]


# ---- Task.report_external_task / Backend().report_external_task --------------------------------


@pytest.fixture(scope="module")
def reports(daphne_server, sdk_python) -> dict[str, Any]:
    alice = daphne_server.account("SDK Agno Org", "alice@agno.test")
    agent_id = create_agent(daphne_server, alice, framework="external")
    report = run_script(sdk_python, "report_example.py", daphne_server, alice, {"agent_id": agent_id})
    return section(report, "reports")


def test_a_reported_task_lands_completed_with_its_metrics(reports):
    task = reports["task"]
    assert task["class"] == "Task" and task["status_is_enum"]
    assert (task["id"], task["status"], task["result"]) == (
        reports["external_id"],
        "completed",
        "Q3 was fine.",
    )
    assert task["text"] == "Summarise Q3"
    assert task["tokens"] == {
        "completion_tokens": 12,
        "prompt_tokens": 30,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "total_tokens": 42,
    }
    assert (task["used_tools"], task["duration"]) == (["search"], 2.5)
    assert task["user_tokens"] is None
    assert reports["task_reloaded"] == task


def test_a_failed_report_through_backend_lands_failed(reports):
    task = reports["backend"]
    assert (task["status"], task["result"]) == ("failed", "Timed out after 30s")
    assert (task["text"], task["used_tools"], task["duration"]) == (
        "Fetch the Q4 numbers",
        ["fetch_numbers"],
        30.0,
    )
    assert task["tokens"]["prompt_tokens"] == 8


@pytest.mark.parametrize(
    ("name", "status", "question", "answer"),
    [
        ("task", "completed", "Summarise Q3", "Q3 was fine."),
        ("backend", "failed", "Fetch the Q4 numbers", "Timed out after 30s"),
    ],
)
def test_a_reported_task_is_listed_with_its_activity_and_its_finished_stream(
    reports, name, status, question, answer
):
    seen = reports[f"{name}_follow"]
    assert seen["listed_status"] == status
    thread = seen["activity"]
    assert "unparsed" not in thread, thread
    assert [(e["class"], e["role"], e["text"]) for e in thread["entries"]] == [
        ("AgentActivityThreadMessage", "user", question),
        ("AgentActivityThreadMessage", "agent", answer),
    ]
    # events() needs events_streaming on the Task; the stream of a finished task closes at once.
    assert seen["events_streaming"] is True
    assert "events_error" not in seen, seen["events_error"]
    assert types(seen["events"]) == ["task_created", "task_updated", "task_finished"]
    assert seen["events"][-1]["data"] == {"task_status": status, "task_result": answer, "task_class": "Task"}


def test_a_report_without_result_answers_with_the_llm_response(reports):
    task = reports["from_response"]
    assert (task["status"], task["result"], task["used_tools"]) == ("completed", "Hi there.", [])


def test_a_reported_id_is_not_reported_twice_and_an_unknown_agent_is_404(reports):
    module_error(reports["same_id_again"], 409)
    module_error(reports["unknown_agent"], 404)


# ---- the Agno example --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agno(daphne_server, sdk_python, mcp_server_session: AuthMCPServer) -> dict[str, Any]:
    server, mcp = daphne_server, mcp_server_session
    alice = server.account("SDK Agno Org", "alice@agno.test")
    mcp.set_users(MCP_TOKENS)
    mcp.reset()
    with ScriptedModel([Turn.tool(WHOAMI), Turn.reply(ANSWER, chunks=3)]) as model:
        agent_id = create_agent(
            server,
            alice,
            framework="external",  # the server does not run it: the example does
            model_provider="openai",  # get_args: agno OpenAIChat(base_url=llm_api_base)
            model_name="gpt-4o-mini",
            model_base_url=model.base_url,
            instructions="Answer with the tools.",
            graph=[
                {
                    "id": "gi-tools",
                    "type": "mcp",
                    "name": "Tools",
                    "settings": {
                        "mcp_settings": {
                            "url": mcp.url,
                            "transport": "streamable-http",
                            "auth_type": "oauth2",
                        }
                    },
                }
            ],
        )
        report = run_script(
            sdk_python, "agno_example.py", server, alice, {"agent_id": agent_id}, OPENAI_API_KEY="sk-anything"
        )
        model_requests, model_errors = model.requests, model.errors
    audit = server.manage(
        "shell",
        "-c",
        "import json; from console.models import McpTokenAccess; print(json.dumps(list("
        f"McpTokenAccess.objects.filter(agent_id={agent_id!r})"
        ".values('user_id', 'graph_item_key', 'outcome'))))",
    )
    return {
        "values": section(report, "agno"),
        "report": report,
        "agent_id": agent_id,
        "mcp_url": mcp.url,
        "mcp_calls": mcp.calls,
        "mcp_http": mcp.http,
        "model_base_url": model.base_url,
        "model_requests": model_requests,
        "model_errors": model_errors,
        "token_accesses": json.loads(audit.strip().splitlines()[-1]),
        "server_log": server.log_text(),
    }


def test_the_example_builds_an_openai_agent_on_the_agents_endpoint(agno):
    values = agno["values"]
    assert values["model_is_openai_chat"] is True
    assert values["model_base_url"] == agno["model_base_url"]
    assert values["model_id"] == "gpt-4o-mini"
    assert "MCPTools" in values["tool_classes"]
    assert "Unavailable tools" not in (values["additional_context"] or ""), values["additional_context"]
    assert (values["files"], values["images"]) == (0, 0)


def test_the_example_answers_after_calling_the_mcp_tool(agno):
    values = agno["values"]
    assert (values["content"], values["run_status"]) == (ANSWER, "COMPLETED")
    assert agno["model_errors"] == []
    first, second = agno["model_requests"]
    assert WHOAMI in {t["function"]["name"] for t in first.body["tools"]}
    assert first.tool_results == []
    assert [(m["tool_call_id"], m["content"]) for m in second.tool_results] == [("call_1", "alice")]
    finished = values["finished"]
    assert (finished["status"], finished["result"]) == ("completed", ANSWER)


def test_the_mcp_server_was_called_as_the_tasks_user(agno):
    assert [(c.name, c.user, c.status) for c in agno["mcp_calls"]] == [("whoami", "alice", "completed")]
    # Every request (the SDK's initialize probe, then agno's session) carried alice's token.
    assert agno["mcp_http"] and {r.user for r in agno["mcp_http"]} == {"alice"}


def test_the_sdk_got_the_token_from_the_server_since_it_is_never_echoed(agno):
    values = agno["values"]
    assert values["created"]["user_tokens"] is None and values["loaded"]["user_tokens"] is None
    assert values["loaded"]["user_id"] == "u-alice"
    assert f'"POST /api/mcp_auth/{agno["agent_id"]}/u-alice/get_token?' in agno["server_log"]
    assert agno["token_accesses"] == [
        {"user_id": "u-alice", "graph_item_key": "gi-tools", "outcome": "token_ready"}
    ]


def test_the_pushed_auth_event_is_in_the_stream_and_the_activity_redacted(agno):
    values = agno["values"]
    token_ready = {
        "type": "token_ready",
        "data": {"access_token": "REDACTED", "server_url": agno["mcp_url"], "server_name": "Tools"},
    }
    events = values["events"]
    assert [e["data"] for e in events if e["type"] == "auth_event"] == [token_ready]
    wanted = ["task_created", "auth_event", "tool_call_request", "tool_call_result", "task_finished"]
    assert [t for t in types(events) if t in wanted] == wanted
    result = next(e["data"] for e in events if e["type"] == "tool_call_result")
    assert (result["tool_name"], result["result"], result["is_error"]) == (WHOAMI, "alice", False)
    assert events[-1]["data"] == {"task_status": "completed", "task_result": ANSWER, "task_class": "Task"}

    thread = values["activity"]
    assert "unparsed" not in thread, thread
    assert [e["class"] for e in thread["entries"]] == [
        "AgentActivityThreadMessage",
        "AgentActivityThreadAuth",
        "AgentActivityThreadToolCall",
        "AgentActivityThreadMessage",
    ]
    user, auth, tool, answer = values["activity_dumps"]
    assert (user["role"], user["content"]["text"], user["user"]["id"]) == (
        "user",
        values["created"]["text"],
        "u-alice",
    )
    assert {"type": auth["type"], "data": auth["data"]} == token_ready
    assert (tool["tool_name"], tool["result"]) == (WHOAMI, "alice")
    assert (answer["role"], answer["content"]["text"]) == ("agent", ANSWER)
    assert USER_TOKEN not in json.dumps(agno["report"]), "the user's token came back from the server"

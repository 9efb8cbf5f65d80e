"""The official xpander-sdk, unmodified, against a live server: the Tasks module end to end.

The SDK runs in its own virtual environment (it pins mcp<2, the server uses mcp 2.x), created
under .cache/ on first use. One script, tests/sdk/flow.py, makes every SDK call in one process and
prints what it saw as JSON; the tests below assert on that report. The script also plays the
external worker: it pushes events over REST and finishes tasks with `Tasks().update(...)`.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.live import ROOT

pytestmark = [pytest.mark.sdk, pytest.mark.live, pytest.mark.timeout(1500)]

SDK_VENV = ROOT / ".cache" / "xpander-sdk-venv"
SDK_VERSION = "2.0.537"
# A plain `pip install xpander-sdk` cannot import (agno missing); the [agno] extra backtracks for
# minutes over mcp versions. This set resolves at once (xpander-wire.md section 0).
SDK_REQUIREMENTS = [f"xpander-sdk=={SDK_VERSION}", "agno==2.5.14", "sqlalchemy", "mcp<2"]
SCRIPT = ROOT / "tests" / "sdk" / "flow.py"
TOKEN = "tok-dana-github"  # the user token the script sends; it must never come back
ACTIVITY_CLASSES = [
    "AgentActivityThreadMessage",
    "AgentActivityThreadToolCall",
    "AgentActivityThreadReasoning",
    "AgentActivityThreadSubAgentTrigger",
]


def _run(cmd: list[str | Path], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)


def ensure_sdk_venv(venv: Path) -> Path:
    """The venv's python, with the SDK installed once; a stamp file marks a finished install."""
    python = venv / "bin" / "python"
    stamp_file = venv / ".installed"
    stamp = "\n".join(SDK_REQUIREMENTS)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions must not install into one venv at once
        if stamp_file.exists() and stamp_file.read_text() == stamp and python.exists():
            return python
        if not python.exists():
            base = getattr(sys, "_base_executable", sys.executable)
            out = _run([base, "-m", "venv", venv], timeout=120)
            assert out.returncode == 0, f"creating the SDK venv failed:\n{out.stderr[-3000:]}"
        out = _run([python, "-m", "pip", "install", "--quiet", *SDK_REQUIREMENTS], timeout=1200)
        assert out.returncode == 0, f"installing the SDK failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        out = _run([python, "-c", "import xpander_sdk; print(xpander_sdk.__version__)"], timeout=120)
        assert out.returncode == 0, f"the SDK does not import:\n{out.stderr[-3000:]}"
        assert out.stdout.strip() == SDK_VERSION
        stamp_file.write_text(stamp)
    return python


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    return ensure_sdk_venv(SDK_VENV)


def revoked_key(server, account) -> str:
    """Another API key of the account's member, issued and then revoked, as an admin would."""
    out = server.manage(
        "shell",
        "-c",
        "from console.models import ApiKey, Membership; "
        f"m = Membership.objects.get(user_id={account.user_id}, organization_id={account.organization_id!r}); "
        "key, raw = ApiKey.issue(m, name='former laptop'); key.revoke(); print(raw)",
    )
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def report(daphne_server, sdk_python) -> dict[str, Any]:
    """Run the SDK script once against the live server; its JSON report, section by section."""
    server = daphne_server
    alice = server.account("SDK Org", "alice@sdk.test")
    charlie = server.account("SDK Other Org", "charlie@sdk.test")
    revoked = revoked_key(server, alice)

    with server.client(alice) as api:
        r = api.post(
            "/v1/agents",
            json={
                "name": f"GitHub helper {uuid.uuid4().hex[:8]}",
                "framework": "external",
                "graph": [
                    {
                        "id": "gi-github",
                        "type": "mcp",
                        "name": "GitHub",
                        "settings": {
                            "mcp_settings": {
                                "url": "https://mcp.example.com/mcp",
                                "transport": "streamable-http",
                                "auth_type": "oauth2",
                            }
                        },
                    }
                ],
            },
        )
        assert r.status_code == 201, r.text
        agent_id = r.json()["id"]
    with server.client(charlie) as api:
        foreign_agent = api.post(
            "/v1/agents", json={"name": f"Theirs {uuid.uuid4().hex[:8]}", "framework": "external"}
        ).json()
        foreign_task = api.post(
            f"/agent-execution/{foreign_agent['id']}", json={"input": {"text": "their secret"}}
        ).json()

    params = {
        "agent_id": agent_id,
        "foreign_task_id": foreign_task["id"],
        "foreign_agent_id": foreign_agent["id"],
        "bad_keys": {"wrong_key": "atc_not-a-real-key", "revoked_key": revoked},
        "variants": {
            "trailing_slash": server.api + "/",  # REST strips it; the SSE root becomes /api//{org}
            "agent_controller": server.url + "/agent-controller",  # the org segment on every route
        },
        "wrong_org": {
            "agent_controller": {
                "base_url": server.url + "/agent-controller",
                "organization_id": charlie.organization_id,
            },
        },
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "XPANDER_", "PYTHON"))}
    env.update(
        XPANDER_BASE_URL=server.api,
        XPANDER_API_KEY=alice.api_key,
        XPANDER_ORGANIZATION_ID=alice.organization_id,
        PYTHONUNBUFFERED="1",
    )
    out = subprocess.run(
        [str(sdk_python), str(SCRIPT)],
        input=json.dumps(params),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"the SDK script crashed:\n{out.stderr[-5000:]}"
    sections = json.loads(out.stdout)
    sections["_params"] = {**params, "organization_id": alice.organization_id}
    return sections


def section(report: dict[str, Any], name: str) -> dict[str, Any]:
    entry = report[name]
    if not entry["ok"]:
        pytest.fail(f"SDK section {name!r} raised {entry['error']}\n{entry['traceback']}")
    return entry["value"]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def module_error(observed: dict[str, Any], status: int) -> None:
    assert observed["class"] == "ModuleException", observed
    assert observed["status_code"] == status, observed
    json.loads(observed["description"])  # the body is our JSON error, not an HTML page


# ---- create, read, update ----------------------------------------------------------------------


def test_create_echoes_the_input_and_never_the_user_tokens(report):
    sync, asyn = section(report, "sync"), section(report, "async")
    created = sync["created"]
    assert created["class"] == "Task" and created["status"] == "pending" and created["status_is_enum"]
    assert created["organization_id"] == report["_params"]["organization_id"]
    assert created["agent_id"] == report["_params"]["agent_id"]
    assert created["text"] == "Summarise the open bugs"
    assert created["files"] == ["https://files.example.com/report.pdf", "https://files.example.com/data.csv"]
    assert (created["user_email"], created["user_id"]) == ("dana@example.com", "u-dana")
    assert created["events_streaming"] is True
    assert (created["output_format"], created["title"], created["source"]) == (
        "markdown",
        "Open bugs",
        "sdk-compat",
    )
    assert created["user_tokens"] is None
    assert created["created_at_tz"]
    acreated = asyn["created"]
    assert acreated["status"] == "pending" and acreated["events_streaming"] is True
    assert acreated["files"] == ["https://files.example.com/report.pdf"]
    assert acreated["attachments"] == [
        {
            "url": "https://files.example.com/report.pdf",
            "name": "report.pdf",
            "mime": "application/pdf",
            "kind": "pdf",
        }
    ]
    assert acreated["user_tokens"] is None
    assert TOKEN not in json.dumps(report), "a user token came back in a reply, an event or the activity log"


def test_get_load_and_their_async_twins_return_the_same_task(report):
    sync, asyn = section(report, "sync"), section(report, "async")
    assert sync["get"] == sync["created"]
    assert sync["load"] == sync["created"]
    assert asyn["aget"] == asyn["created"]
    assert asyn["aload"] == asyn["created"]
    assert sync["list_item_load"]["id"] == sync["ids"]["created"]
    assert sync["list_item_load"]["status"] == "completed"


def test_update_sets_status_and_result_and_reload_sees_it(report):
    sync, asyn = section(report, "sync"), section(report, "async")
    assert sync["update_executing"]["status"] == "executing"
    assert sync["reload_returns"] == "None"  # the SDK's reload() updates in place
    assert (sync["reloaded"]["status"], sync["reloaded"]["result"]) == ("completed", "Hello")
    assert asyn["areload_returns_self"] is True
    assert (asyn["reloaded"]["status"], asyn["reloaded"]["result"]) == ("completed", "Async done")
    assert (sync["set_status"]["status"], sync["set_status"]["result"]) == ("completed", "Done by set_status")
    module_error(sync["update_finished_other_status"], 409)
    for name in ("report_metrics", "report_metrics_without_source"):
        metrics = sync[name]  # what task.report_metrics() raised, if anything
        assert metrics["class"] is None, metrics


def test_save_stores_the_internal_status(report):
    sync, asyn = section(report, "sync"), section(report, "async")
    assert (sync["save_running"]["internal_status"], sync["save_running"]["status"]) == ("triage", "pending")
    assert sync["reloaded"]["internal_status"] == "triage"
    assert (asyn["asave"]["internal_status"], asyn["asave"]["status"]) == ("reviewed", "completed")
    module_error(sync["internal_status_too_long"], 422)


def test_a_stale_copy_saved_after_completion_keeps_completed(report):
    sync = section(report, "sync")
    for view in (sync["stale_save"], sync["after_stale_save"]):
        assert view["status"] == "completed"
        assert view["result"] == "Hello"
        assert view["internal_status"] == "sent to customer"


def test_a_stale_copy_saved_while_running_keeps_it_running(report):
    view = section(report, "sync")["stale_save_running"]
    assert view["internal_status"] == "awaiting review"
    assert view["status"] == "executing"


def test_a_follow_up_turn_continues_the_same_task(report):
    sync = section(report, "sync")
    follow_up = sync["follow_up"]
    assert follow_up["id"] == sync["ids"]["fourth"]
    assert (follow_up["status"], follow_up["text"], follow_up["result"]) == (
        "pending",
        "And the closed ones?",
        None,
    )
    module_error(sync["follow_up_while_pending"], 409)
    thread = sync["follow_up_activity"]["entries"]
    assert [(e["role"], e["text"]) for e in thread] == [
        ("user", "Fourth"),
        ("agent", "Done by set_status"),
        ("user", "And the closed ones?"),
        ("agent", "Closed: none"),
    ]


# ---- stop ----------------------------------------------------------------------------------------


def test_stop_and_astop_return_the_stopped_task(report):
    sync, asyn = section(report, "sync"), section(report, "async")
    for view in (sync["stop"], sync["task_stop"], asyn["task_astop"], asyn["astop"]):
        assert view["status"] == "stopped", view
        assert view["is_manually_stopped"] is True
    module_error(sync["stop_again"], 409)


def test_astop_under_an_open_stream_ends_it_with_task_finished(report):
    asyn = section(report, "async")
    events = asyn["astop_events"]
    assert types(events)[0] == "task_created"
    assert types(events)[-1] == "task_finished"
    assert events[-1]["data"] == {
        "task_status": "stopped",
        "task_result": "Stopped by request",
        "task_class": "Task",
    }


# ---- events ------------------------------------------------------------------------------------


def test_sync_events_return_after_task_finished(report):
    sync = section(report, "sync")
    events = sync["events"]
    assert types(events)[0] == "task_created"
    assert types(events)[-1] == "task_finished"
    assert events[-1]["data"] == {"task_status": "completed", "task_result": "Hello", "task_class": "Task"}
    assert [e["data"] for e in events if e["type"] == "chunk"] == ["Hel", "lo"]
    pushed = [t for t in types(events) if not t.startswith("task_")]
    assert pushed == ["chunk", "chunk", "tool_call_request", "tool_call_result", "think", "sub_agent_trigger"]
    result = next(e["data"] for e in events if e["type"] == "tool_call_result")
    assert result["result"] == {"count": 2}
    assert result["payload"] == {"q": "bug", "as_user": "REDACTED"}
    assert all(e["task_id"] == sync["ids"]["created"] and e["time_tz"] for e in events)
    # Asked again after the end, the stream replays the log and closes at once; the log goes on
    # with the task_updated of the internal status that the stale copy saved after the finish.
    replay = sync["events_after_finish"]
    assert replay[: len(events)] == events
    assert [(e["type"], e["data"]["task_status"]) for e in replay[len(events) :]] == [
        ("task_updated", "completed")
    ]
    assert types(sync["stopped_events"])[-1] == "task_finished"
    assert sync["stopped_events"][-1]["data"]["task_status"] == "stopped"
    assert sync["events_without_streaming"]["class"] == "ValueError"


def test_aevents_stream_live_and_end_after_task_finished(report):
    events = section(report, "async")["aevents"]
    assert types(events) == [
        "task_created",
        "chunk",
        "tool_call_request",
        "tool_call_result",
        "think",
        "sub_agent_trigger",
        "task_updated",
        "task_finished",
    ]
    assert events[1]["data"] == "Looking"
    assert events[-1]["data"] == {
        "task_status": "completed",
        "task_result": "Async done",
        "task_class": "Task",
    }


# ---- activity log --------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["sync", "async"])
def test_activity_log_entries_are_the_sdk_classes(report, flow):
    values = section(report, flow)
    thread = values["activity"]
    assert "unparsed" not in thread, thread
    assert thread["id"] == values["ids"]["created"]
    assert thread["user_email"] == "dana@example.com"
    entries = thread["entries"]
    assert [e["class"] for e in entries] == [*ACTIVITY_CLASSES, "AgentActivityThreadMessage"]
    user, tool, reasoning, sub_agent, answer = entries
    assert (user["role"], user["user_email"]) == ("user", "dana@example.com")
    assert user["text"] == values["created"]["text"]
    assert user["files"] == values["created"]["files"]
    assert (tool["tool_name"], tool["result"], tool["is_error"]) == ("search_issues", {"count": 2}, False)
    assert tool["payload"] == {"q": "bug", "as_user": "REDACTED"}
    assert (reasoning["type"], reasoning["title"]) == ("think", "Plan")
    assert reasoning["thought"] == "Two issues match; summarise them."
    assert (sub_agent["agent_id"], sub_agent["query"]) == ("sub-writer", "Write the summary")
    assert (answer["role"], answer["text"]) == ("agent", values["reloaded"]["result"])


# ---- list ----------------------------------------------------------------------------------------


def test_list_filters_by_status_internal_status_and_user(report):
    sync, asyn = section(report, "sync"), section(report, "async")
    ids = sync["ids"]
    listed = sync["list"]
    assert listed["classes"] == ["TasksListItem"]
    assert {ids["created"], ids["second"], ids["third"], ids["fourth"], ids["fifth"]} <= set(listed["ids"])
    assert listed["statuses"][ids["created"]] == "completed"
    assert listed["statuses"][ids["second"]] == "stopped"
    assert {ids["created"], ids["fourth"]} <= set(sync["list_completed"])
    assert not {ids["second"], ids["third"]} & set(sync["list_completed"])
    assert sync["list_completed_enum"] == sync["list_completed"]  # str(AgentExecutionStatus.Completed)
    assert {ids["second"], ids["third"], ids["fifth"]} <= set(sync["list_stopped"])
    assert ids["created"] not in sync["list_stopped"]
    assert sync["list_internal"] == [ids["created"]]
    assert set(sync["list_user"]) == {ids["created"], ids["fourth"]}
    assert set(sync["list_user_tasks"]) == {ids["created"], ids["fourth"]}
    assert asyn["alist_internal"] == [asyn["ids"]["created"]]
    assert {asyn["ids"]["other"], asyn["ids"]["third"], ids["second"]} <= set(asyn["alist_stopped"])


# ---- agents --------------------------------------------------------------------------------------


def test_agents_aget_exposes_the_mcp_graph_item(report):
    agent = section(report, "async")["agent"]
    assert agent["id"] == report["_params"]["agent_id"]
    assert agent["graph"] == [
        {"id": "gi-github", "type_is_mcp": True, "url": "https://mcp.example.com/mcp", "auth_type": "oauth2"}
    ]


# ---- errors --------------------------------------------------------------------------------------


def test_another_organizations_task_and_agent_are_404(report):
    errors = section(report, "errors")
    for name in (
        "foreign_get",
        "foreign_load",
        "foreign_update",
        "foreign_stop",
        "foreign_list",
        "foreign_agent",
        "foreign_activity",
        "unknown_task",
        "unknown_agent_create",
    ):
        module_error(errors[name], 404)
    # The SDK's events() does not raise ModuleException: any non-SSE answer is httpx_sse's SSEError.
    assert errors["foreign_events"]["class"] == "SSEError"
    assert "application/json" in errors["foreign_events"]["message"]


@pytest.mark.parametrize("key", ["wrong_key", "revoked_key"])
def test_a_wrong_or_revoked_key_is_401(report, key):
    errors = section(report, "errors")
    for call in ("get", "create", "list", "agent", "activity"):
        module_error(errors[f"{key}_{call}"], 401)
    assert errors[f"{key}_events"]["class"] == "SSEError"


# ---- base URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["trailing_slash", "agent_controller"])
def test_other_base_urls_reach_the_same_api(report, variant):
    values = section(report, f"variant:{variant}")
    org = report["_params"]["organization_id"]
    if variant == "agent_controller":
        assert values["full_url"].endswith(f"/agent-controller/{org}")
    assert values["created"]["status"] == "pending"
    assert values["get"] == values["created"]
    assert types(values["events"]) == ["task_created", "chunk", "task_updated", "task_finished"]
    assert values["saved"]["status"] == "completed"
    assert values["saved"]["internal_status"] == f"reviewed via {variant}"
    assert [e["class"] for e in values["activity"]["entries"]] == ["AgentActivityThreadMessage"] * 2
    assert values["list"] == [values["id"]]
    assert values["agent_graph_types"] == ["mcp"]


def test_an_organization_segment_that_is_not_the_keys_is_404(report):
    values = section(report, "wrong_org:agent_controller")
    module_error(values["list"], 404)
    module_error(values["create"], 404)

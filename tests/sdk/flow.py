"""Drive the live server with the official xpander-sdk, unmodified; print one JSON report.

Run by tests/test_sdk_compat.py with the SDK's own virtual environment. The environment carries
XPANDER_BASE_URL, XPANDER_API_KEY and XPANDER_ORGANIZATION_ID; stdin carries a JSON object with the
ids the test prepared (see `main`). The script also plays the external worker of its tasks: it
pushes events over REST and finishes them with `Tasks().update(...)`, as an xpander worker does.

Each section is recorded separately, with the exception if it raised, so that the test reports
every incompatibility at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

import httpx
from xpander_sdk import (
    AgentExecutionStatus,
    Agents,
    Configuration,
    ModuleException,
    OutputFormat,
    Task,
    Tasks,
    User,
)
from xpander_sdk.models.activity import (
    AgentActivityThreadMessage,
    AgentActivityThreadReasoning,
    AgentActivityThreadSubAgentTrigger,
    AgentActivityThreadToolCall,
)
from xpander_sdk.modules.tasks.models.task import AttachmentRef

API = os.environ["XPANDER_BASE_URL"].rstrip("/")
KEY = os.environ["XPANDER_API_KEY"]
ORG = os.environ["XPANDER_ORGANIZATION_ID"]
FILES = ["https://files.example.com/report.pdf", "https://files.example.com/data.csv"]
USER = User(id="u-dana", email="dana@example.com", first_name="Dana", timezone="Europe/Paris")
TOKENS = {"gi-github": "tok-dana-github"}
STEP_TIMEOUT = 30.0

WORKER_EVENTS = [
    {"type": "chunk", "data": "Hel"},
    {"type": "chunk", "data": "lo"},
    # The worker echoes the user's token: the server must mask it before storing anything.
    {
        "type": "tool_call_request",
        "data": {
            "request_id": "r1",
            "operation_id": "search_issues",
            "tool_name": "search_issues",
            "payload": {"q": "bug", "as_user": TOKENS["gi-github"]},
        },
    },
    {
        "type": "tool_call_result",
        "data": {
            "request_id": "r1",
            "operation_id": "search_issues",
            "tool_name": "search_issues",
            "payload": {"q": "bug", "as_user": TOKENS["gi-github"]},
            "result": {"count": 2},
        },
    },
    {"type": "think", "data": {"title": "Plan", "thought": "Two issues match; summarise them."}},
    {
        "type": "sub_agent_trigger",
        "data": {"agent_id": "sub-writer", "query": "Write the summary", "reasoning": {}},
    },
]


def push(task_id: str, events: list[dict[str, Any]], api: str = API, key: str = KEY) -> None:
    """The worker's push, over plain REST (the SDK has no public call for it)."""
    r = httpx.post(
        f"{api}/agent-execution/{task_id}/events/push",
        json=events,
        headers={"x-api-key": key},
        timeout=STEP_TIMEOUT,
    )
    r.raise_for_status()


async def apush(task_id: str, events: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as client:
        r = await client.post(
            f"{API}/agent-execution/{task_id}/events/push", json=events, headers={"x-api-key": KEY}
        )
        r.raise_for_status()


def task_view(task: Task) -> dict[str, Any]:
    return {
        "class": type(task).__name__,
        "id": task.id,
        "agent_id": task.agent_id,
        "organization_id": task.organization_id,
        "status": task.status.value if task.status else None,
        "status_is_enum": isinstance(task.status, AgentExecutionStatus),
        "result": task.result,
        "internal_status": task.internal_status,
        "events_streaming": task.events_streaming,
        "is_manually_stopped": task.is_manually_stopped,
        "text": task.input.text,
        "files": list(task.input.files or []),
        "attachments": [a.model_dump(exclude_none=True) for a in task.input.attachments or []],
        "output_format": task.output_format.value if task.output_format else None,
        "title": task.title,
        "source": task.source,
        "user_email": task.input.user.email if task.input.user else None,
        "user_id": task.input.user.id if task.input.user else None,
        "user_tokens": task.user_tokens,
        "created_at_tz": task.created_at.tzinfo is not None,
    }


def event_view(event: Any) -> dict[str, Any]:
    data = event.data
    if isinstance(data, Task):
        data = {
            "task_status": data.status.value if data.status else None,
            "task_result": data.result,
            "task_class": "Task",
        }
    return {
        "type": str(event.type.value),
        "task_id": event.task_id,
        "data": data,
        "time_tz": event.time.tzinfo is not None,
    }


def activity_view(thread: Any) -> dict[str, Any]:
    if isinstance(thread, str):  # the SDK returns the raw text when the thread does not validate
        return {"unparsed": thread[:2000]}
    entries = []
    for m in thread.messages:
        entry: dict[str, Any] = {"class": type(m).__name__}
        if isinstance(m, AgentActivityThreadMessage):
            entry.update(
                role=m.role,
                text=m.content.text,
                files=list(m.content.files or []),
                user_email=m.user.email if m.user else None,
            )
        elif isinstance(m, AgentActivityThreadToolCall):
            entry.update(tool_name=m.tool_name, payload=m.payload, result=m.result, is_error=m.is_error)
        elif isinstance(m, AgentActivityThreadReasoning):
            entry.update(type=m.type.value, title=m.title, thought=m.thought)
        elif isinstance(m, AgentActivityThreadSubAgentTrigger):
            entry.update(agent_id=m.agent_id, query=m.query)
        entries.append(entry)
    return {"id": thread.id, "entries": entries, "user_email": thread.user.email if thread.user else None}


def error_view(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"class": type(exc).__name__, "message": str(exc)[:500]}
    if isinstance(exc, ModuleException):
        out.update(status_code=exc.status_code, description=exc.description[:500])
    return out


def expect_error(fn, *args, **kwargs) -> dict[str, Any]:
    try:
        result = fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except Exception as exc:  # the error itself is the observation
        return error_view(exc)
    return {"class": None, "returned": repr(result)[:300]}


class Report:
    def __init__(self) -> None:
        self.sections: dict[str, Any] = {}

    def run(self, name: str, fn, *args) -> None:
        started = time.monotonic()
        try:
            value = fn(*args)
            self.sections[name] = {"ok": True, "value": value}
        except Exception as exc:  # reported to the test, which fails on it
            self.sections[name] = {"ok": False, "error": error_view(exc), "traceback": traceback.format_exc()}
        self.sections[name]["seconds"] = round(time.monotonic() - started, 2)


def with_deadline(fn, *args, timeout: float = STEP_TIMEOUT):
    """Run a blocking SDK call in a thread, so a stream that never closes fails instead of hanging."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except Exception as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} did not return within {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- the synchronous API -----------------------------------------------------------------------


def sync_flow(agent_id: str) -> dict[str, Any]:
    tasks = Tasks()
    out: dict[str, Any] = {}
    created = tasks.create(
        agent_id=agent_id,
        prompt="Summarise the open bugs",
        file_urls=FILES,
        user_details=USER,
        user_tokens=TOKENS,
        events_streaming=True,
        output_format=OutputFormat.Markdown,
        title="Open bugs",
        source="sdk-compat",
    )
    out["created"] = task_view(created)
    out["get"] = task_view(tasks.get(created.id))
    stale = Task.load(created.id)  # kept to save() after the task completed
    out["load"] = task_view(stale)

    created.internal_status = "triage"
    created.save()
    out["save_running"] = task_view(created)
    out["update_executing"] = task_view(tasks.update(created.id, status=AgentExecutionStatus.Executing))

    def worker() -> None:
        time.sleep(0.3)  # let events() connect first: the rest arrives live
        push(created.id, WORKER_EVENTS)
        Tasks().update(created.id, status=AgentExecutionStatus.Completed, result="Hello")

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    out["events"] = [event_view(e) for e in with_deadline(lambda: list(created.events()))]
    thread.join(STEP_TIMEOUT)

    out["reload_returns"] = repr(created.reload())
    out["reloaded"] = task_view(created)

    stale.internal_status = "sent to customer"
    stale.save()
    out["stale_save"] = task_view(stale)
    out["after_stale_save"] = task_view(tasks.get(created.id))
    out["activity"] = activity_view(created.get_activity_log())
    out["report_metrics"] = expect_error(created.report_metrics)
    out["events_after_finish"] = [event_view(e) for e in with_deadline(lambda: list(created.events()))]
    out["update_finished_other_status"] = expect_error(
        tasks.update, created.id, status=AgentExecutionStatus.Failed
    )

    second = tasks.create(agent_id=agent_id, prompt="Second", events_streaming=True)
    out["stop"] = task_view(tasks.stop(second.id))
    out["stop_again"] = expect_error(tasks.stop, second.id)
    out["stopped_events"] = [event_view(e) for e in with_deadline(lambda: list(second.events()))]
    third = tasks.create(agent_id=agent_id, prompt="Third")
    third.stop()
    out["task_stop"] = task_view(third)
    out["events_without_streaming"] = expect_error(lambda: list(third.events()))

    # A copy loaded while pending saves an internal status after the worker took the task.
    fifth = tasks.create(agent_id=agent_id, prompt="Fifth")
    stale_pending = Task.load(fifth.id)
    tasks.update(fifth.id, status=AgentExecutionStatus.Executing)
    stale_pending.internal_status = "awaiting review"
    stale_pending.save()
    out["stale_save_running"] = task_view(tasks.get(fifth.id))
    tasks.stop(fifth.id)

    fourth = tasks.create(agent_id=agent_id, prompt="Fourth", user_details=USER)
    fourth.set_status(AgentExecutionStatus.Completed, "Done by set_status")
    out["set_status"] = task_view(fourth)
    out["report_metrics_without_source"] = expect_error(fourth.report_metrics)
    fourth.internal_status = "x" * 256
    out["internal_status_too_long"] = expect_error(fourth.save)
    follow_up = tasks.create(agent_id=agent_id, existing_task_id=fourth.id, prompt="And the closed ones?")
    out["follow_up"] = task_view(follow_up)
    out["follow_up_while_pending"] = expect_error(
        tasks.create, agent_id=agent_id, existing_task_id=fourth.id, prompt="Too early"
    )
    tasks.update(fourth.id, status=AgentExecutionStatus.Completed, result="Closed: none")
    out["follow_up_activity"] = activity_view(Task.load(fourth.id).get_activity_log())

    def ids(items: list[Any]) -> list[str]:
        return [i.id for i in items]

    everything = tasks.list(agent_id=agent_id)
    out["list"] = {
        "classes": sorted({type(i).__name__ for i in everything}),
        "statuses": {i.id: i.status.value for i in everything},
        "ids": ids(everything),
    }
    out["list_completed"] = ids(tasks.list(agent_id=agent_id, filters={"status": "completed"}))
    out["list_completed_enum"] = ids(
        tasks.list(agent_id=agent_id, filters={"status": AgentExecutionStatus.Completed})
    )
    out["list_stopped"] = ids(tasks.list(agent_id=agent_id, filters={"status": "stopped"}))
    out["list_internal"] = ids(tasks.list(agent_id=agent_id, filters={"internal_status": "sent to customer"}))
    out["list_user"] = ids(tasks.list(agent_id=agent_id, filters={"user_id": "u-dana"}))
    out["list_user_tasks"] = ids(tasks.list_user_tasks(user_id="u-dana", filters={"status": "completed"}))
    item = next(i for i in everything if i.id == created.id)
    out["list_item_load"] = task_view(item.load())
    out["ids"] = {
        "created": created.id,
        "second": second.id,
        "third": third.id,
        "fourth": fourth.id,
        "fifth": fifth.id,
    }
    return out


# ---- the asynchronous API ----------------------------------------------------------------------


async def async_flow(agent_id: str) -> dict[str, Any]:
    tasks = Tasks()
    out: dict[str, Any] = {}
    created = await tasks.acreate(
        agent_id=agent_id,
        prompt="Triage the new issues",
        file_urls=FILES[:1],
        user_details=USER,
        user_tokens=TOKENS,
        events_streaming=True,
        attachments=[AttachmentRef(url=FILES[0], name="report.pdf", mime="application/pdf", kind="pdf")],
    )
    out["created"] = task_view(created)
    out["aget"] = task_view(await tasks.aget(created.id))
    out["aload"] = task_view(await Task.aload(created.id))

    saw_chunk = asyncio.Event()
    events: list[Any] = []

    async def consume() -> None:
        async for event in created.aevents():  # no break: the server closes after task_finished
            events.append(event)
            if event.type == "chunk":
                saw_chunk.set()

    async def work() -> None:
        await apush(created.id, [{"type": "chunk", "data": "Looking"}])
        await saw_chunk.wait()  # proves live delivery: nothing else would wake the consumer
        await apush(created.id, WORKER_EVENTS[2:])
        await tasks.aupdate(created.id, status=AgentExecutionStatus.Completed, result="Async done")

    await asyncio.wait_for(asyncio.gather(consume(), work()), STEP_TIMEOUT)
    out["aevents"] = [event_view(e) for e in events]
    out["areload_returns_self"] = (await created.areload()) is created
    out["reloaded"] = task_view(created)
    created.internal_status = "reviewed"
    await created.asave()
    out["asave"] = task_view(created)
    out["activity"] = activity_view(await created.aget_activity_log())

    other = await tasks.acreate(agent_id=agent_id, prompt="Async stop", events_streaming=True)
    stop_events: list[Any] = []
    stopped: list[Task] = []

    async def follow() -> None:
        async for event in other.aevents():
            stop_events.append(event)
            if event.type == "task_created":  # the stream is open: stop the task under it
                stopped.append(await tasks.astop(other.id))

    await asyncio.wait_for(follow(), STEP_TIMEOUT)
    out["astop"] = task_view(stopped[0])
    out["astop_events"] = [event_view(e) for e in stop_events]
    third = await tasks.acreate(agent_id=agent_id, prompt="Async task stop")
    await third.astop()
    out["task_astop"] = task_view(third)
    out["alist_internal"] = [
        i.id for i in await tasks.alist(agent_id, filters={"internal_status": "reviewed"})
    ]
    out["alist_stopped"] = [i.id for i in await tasks.alist(agent_id, filters={"status": "stopped"})]

    agent = await Agents().aget(agent_id)
    out["agent"] = {
        "id": agent.id,
        "name": agent.name,
        "graph": [
            {
                "id": item.id,
                "type_is_mcp": item.type == "mcp",
                "url": item.settings.mcp_settings.url
                if item.settings and item.settings.mcp_settings
                else None,
                "auth_type": item.settings.mcp_settings.auth_type.value
                if item.settings and item.settings.mcp_settings
                else None,
            }
            for item in agent.graph.items
        ],
    }
    out["ids"] = {"created": created.id, "other": other.id, "third": third.id}
    return out


# ---- errors ------------------------------------------------------------------------------------


def errors(agent_id: str, foreign_task_id: str, foreign_agent_id: str, bad_keys: dict[str, str]) -> dict:
    tasks = Tasks()
    own_task_id = tasks.create(agent_id=agent_id, prompt="Mine").id
    out: dict[str, Any] = {
        "foreign_get": expect_error(tasks.get, foreign_task_id),
        "foreign_load": expect_error(Task.load, foreign_task_id),
        "foreign_update": expect_error(tasks.update, foreign_task_id, status=AgentExecutionStatus.Completed),
        "foreign_stop": expect_error(tasks.stop, foreign_task_id),
        "foreign_list": expect_error(tasks.list, foreign_agent_id),
        "foreign_agent": expect_error(Agents().aget, foreign_agent_id),
        "unknown_task": expect_error(tasks.get, "00000000-0000-0000-0000-000000000000"),
        "unknown_agent_create": expect_error(tasks.create, agent_id="no-such-agent", prompt="x"),
    }
    # A Task object can point at another organization's task; its activity log is still a 404.
    foreign = Task(
        id=foreign_task_id,
        agent_id=foreign_agent_id,
        organization_id=ORG,
        input={},
        created_at="2025-01-01T00:00:00Z",
        events_streaming=True,
        configuration=tasks.configuration,
    )
    out["foreign_activity"] = expect_error(foreign.get_activity_log)
    out["foreign_events"] = expect_error(lambda: list(foreign.events()))
    for name, key in bad_keys.items():
        cfg = Configuration(api_key=key, base_url=API, organization_id=ORG)
        mine = Task(
            id=own_task_id,
            agent_id=agent_id,
            organization_id=ORG,
            input={},
            created_at="2025-01-01T00:00:00Z",
            events_streaming=True,
            configuration=cfg,
        )
        out[f"{name}_events"] = expect_error(lambda task=mine: list(task.events()))
        out[f"{name}_activity"] = expect_error(mine.get_activity_log)
        out[f"{name}_get"] = expect_error(Tasks(configuration=cfg).get, own_task_id)
        out[f"{name}_create"] = expect_error(Tasks(configuration=cfg).create, agent_id=agent_id, prompt="x")
        out[f"{name}_list"] = expect_error(Tasks(configuration=cfg).list, agent_id)
        out[f"{name}_agent"] = expect_error(Agents(configuration=cfg).aget, agent_id)
    return out


# ---- other base URLs ---------------------------------------------------------------------------


def variant(agent_id: str, name: str, base_url: str) -> dict[str, Any]:
    """The main calls through another base URL (trailing slash, agent-controller mount)."""
    cfg = Configuration(api_key=KEY, base_url=base_url, organization_id=ORG)
    tasks = Tasks(configuration=cfg)
    out: dict[str, Any] = {"full_url": cfg.get_full_url()}
    created = tasks.create(agent_id=agent_id, prompt="Variant", user_details=USER, events_streaming=True)
    out["created"] = task_view(created)
    out["get"] = task_view(tasks.get(created.id))
    push(created.id, WORKER_EVENTS[:1])
    tasks.update(created.id, status=AgentExecutionStatus.Completed, result="Variant done")
    out["events"] = [event_view(e) for e in with_deadline(lambda: list(created.events()))]
    created.internal_status = f"reviewed via {name}"
    created.save()
    out["saved"] = task_view(created)
    out["activity"] = activity_view(created.get_activity_log())
    out["list"] = [i.id for i in tasks.list(agent_id, filters={"internal_status": f"reviewed via {name}"})]
    agent = asyncio.run(Agents(configuration=cfg).aget(agent_id))
    out["agent_graph_types"] = [str(i.type.value) for i in agent.graph.items]
    out["id"] = created.id
    return out


def wrong_org(agent_id: str, base_url: str, organization_id: str) -> dict[str, Any]:
    cfg = Configuration(api_key=KEY, base_url=base_url, organization_id=organization_id)
    return {
        "full_url": cfg.get_full_url(),
        "list": expect_error(Tasks(configuration=cfg).list, agent_id),
        "create": expect_error(Tasks(configuration=cfg).create, agent_id=agent_id, prompt="x"),
    }


def main() -> None:
    params = json.load(sys.stdin)
    agent_id = params["agent_id"]
    report = Report()
    report.run("sync", sync_flow, agent_id)
    report.run("async", lambda: asyncio.run(async_flow(agent_id)))
    report.run(
        "errors", errors, agent_id, params["foreign_task_id"], params["foreign_agent_id"], params["bad_keys"]
    )
    for name, base_url in params.get("variants", {}).items():
        report.run(f"variant:{name}", variant, agent_id, name, base_url)
    for name, spec in params.get("wrong_org", {}).items():
        report.run(f"wrong_org:{name}", wrong_org, agent_id, spec["base_url"], spec["organization_id"])
    print(json.dumps(report.sections, default=str))


if __name__ == "__main__":
    main()

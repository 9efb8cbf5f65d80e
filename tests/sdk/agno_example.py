"""The seed's Agno example, run with the official xpander-sdk, unmodified; print one JSON report.

Run by tests/test_sdk_agno.py with the SDK's own virtual environment and only the example's
environment: XPANDER_BASE_URL, XPANDER_API_KEY, XPANDER_ORGANIZATION_ID and OPENAI_API_KEY. stdin
carries `{"agent_id": ...}`, an external agent whose model is the test's scripted OpenAI-compatible
server and whose graph has one OAuth MCP server.

The example: create a task for a user with that user's MCP token, load it back, build the Agno
agent with `Backend().aget_args(...)` and run it. The token is never echoed in the Task, so the SDK
must fetch it from the server's get_token route; the MCP server tells us as whom it was called.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from agno.agent import Agent
from agno.models.openai import OpenAIChat
from flow import STEP_TIMEOUT, Report, activity_view, event_view, task_view, with_deadline
from xpander_sdk import AgentExecutionStatus, Backend, Tasks, User

USER = User(id="u-alice", email="alice@example.com", first_name="Alice")
PROMPT = "Who am I on the tools server?"


async def run_example(task_id: str, agent_id: str) -> dict[str, Any]:
    """The example's worker half: load the task, build the Agno agent, run it."""
    task = Tasks().get(task_id)
    args = await Backend().aget_args(agent_id=agent_id, task=task)
    # SDK 2.0.537 always adds this private key, which agno's Agent rejects ("unexpected keyword
    # argument"); its own comment says the worker takes it and closes those toolkits after the run.
    hidden = args.pop("_xpander_hidden_mcp_toolkits", [])
    agno_agent = Agent(**args)
    files, images = task.get_files(), task.get_images()
    try:
        result = await agno_agent.arun(input=task.to_message(), files=files, images=images)
    finally:
        for toolkit in hidden:
            await toolkit.close()
    # The SDK pushes tool results in fire-and-forget tasks; a worker's loop outlives them, ours
    # would cancel them on return, so let them land first.
    pending = asyncio.all_tasks() - {asyncio.current_task()}
    if pending:
        await asyncio.wait(pending, timeout=STEP_TIMEOUT)
    model = args.get("model")
    return {
        "loaded": task_view(task),
        "model_is_openai_chat": isinstance(model, OpenAIChat),
        "model_base_url": str(getattr(model, "base_url", None)),
        "model_id": getattr(model, "id", None),
        "tool_classes": [type(t).__name__ for t in args.get("tools") or []],
        "additional_context": args.get("additional_context"),
        "files": len(files),
        "images": len(images),
        "content": result.content,
        "run_status": getattr(result.status, "value", str(result.status)),
    }


async def run_with_deadline(task_id: str, agent_id: str) -> dict[str, Any]:
    async with asyncio.timeout(STEP_TIMEOUT * 4):
        return await run_example(task_id, agent_id)


def agno(agent_id: str) -> dict[str, Any]:
    tasks = Tasks()
    created = tasks.create(
        agent_id,
        prompt=PROMPT,
        user_details=USER,
        user_tokens={"gi-tools": "tok-alice"},
        events_streaming=True,
    )
    out: dict[str, Any] = {"created": task_view(created)}
    started = time.monotonic()
    out.update(asyncio.run(run_with_deadline(created.id, agent_id)))
    out["run_seconds"] = round(time.monotonic() - started, 2)
    # The worker finishes the task with the agent's answer.
    tasks.update(created.id, status=AgentExecutionStatus.Completed, result=out["content"])
    out["events"] = [event_view(e) for e in with_deadline(lambda: list(created.events()))]
    thread = created.get_activity_log()
    out["activity"] = activity_view(thread)
    out["activity_dumps"] = [
        {"class": type(m).__name__, **m.model_dump(mode="json")} for m in getattr(thread, "messages", [])
    ]
    out["finished"] = task_view(tasks.get(created.id))
    return out


def main() -> None:
    params = json.load(sys.stdin)
    report = Report()
    report.run("agno", agno, params["agent_id"])
    print(json.dumps(report.sections, default=str))


if __name__ == "__main__":
    main()

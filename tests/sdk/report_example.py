"""Report tasks that ran elsewhere with the official xpander-sdk, unmodified; print one JSON report.

Run by tests/test_sdk_agno.py with the SDK's own virtual environment; the environment carries
XPANDER_BASE_URL, XPANDER_API_KEY and XPANDER_ORGANIZATION_ID, stdin `{"agent_id": ...}`.
`Task.report_external_task(...)` and `Backend().report_external_task(...)` both post to
`/agent-execution/{agent_id}/report_task` and parse the Task JSON the server answers.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from flow import Report, activity_view, error_view, event_view, expect_error, task_view, with_deadline
from xpander_sdk import Backend, Task, Tasks, Tokens


def view(task: Task) -> dict[str, Any]:
    return {
        **task_view(task),
        "tokens": task.tokens.model_dump(mode="json") if task.tokens else None,
        "used_tools": list(task.used_tools or []),
        "duration": task.duration,
    }


def streamed_events(task: Task) -> dict[str, Any]:
    """The sync stream, as the SDK delivers it: it returns only once the server closed it (bounded)."""
    try:
        events = with_deadline(lambda: list(task.events()))
    except Exception as exc:  # e.g. the SDK's ValueError when events_streaming is false
        return {"events_error": error_view(exc)}
    return {"events": [event_view(e) for e in events]}


def follow(task: Task, agent_id: str) -> dict[str, Any]:
    """What the user of a reported task sees: the listing, the activity log and the event stream."""
    listed = {i.id: i.status.value for i in Tasks().list(agent_id=agent_id)}
    return {
        "listed_status": listed.get(task.id),
        "activity": activity_view(task.get_activity_log()),
        "events_streaming": task.events_streaming,
        **streamed_events(task),
    }


def reports(agent_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    external_id = f"ext-{uuid.uuid4().hex[:12]}"
    out["external_id"] = external_id
    done = Task.report_external_task(
        agent_id=agent_id,
        id=external_id,
        input="Summarise Q3",
        llm_response={"choices": [{"message": {"role": "assistant", "content": "Q3 was fine."}}]},
        tokens=Tokens(prompt_tokens=30, completion_tokens=12),
        is_success=True,
        result="Q3 was fine.",
        duration=2.5,
        used_tools=["search"],
    )
    out["task"] = view(done)
    out["task_follow"] = follow(done, agent_id)
    out["task_reloaded"] = view(Tasks().get(done.id))
    out["same_id_again"] = expect_error(
        Task.report_external_task, agent_id=agent_id, id=external_id, input="Again", result="x"
    )

    failed = Backend().report_external_task(
        agent_id=agent_id,
        input="Fetch the Q4 numbers",
        llm_response="upstream timed out",
        tokens=Tokens(prompt_tokens=8, completion_tokens=0),
        is_success=False,
        result="Timed out after 30s",
        duration=30.0,
        used_tools=["fetch_numbers"],
    )
    out["backend"] = view(failed)
    out["backend_follow"] = follow(failed, agent_id)
    # With no result, the answer is the text of the raw LLM response.
    from_response = Backend().report_external_task(
        agent_id=agent_id,
        input="Say hi",
        llm_response={"choices": [{"message": {"role": "assistant", "content": "Hi there."}}]},
    )
    out["from_response"] = view(from_response)
    out["unknown_agent"] = expect_error(Task.report_external_task, agent_id="no-such-agent", input="x")
    return out


def main() -> None:
    params = json.load(sys.stdin)
    report = Report()
    report.run("reports", reports, params["agent_id"])
    print(json.dumps(report.sections, default=str))


if __name__ == "__main__":
    main()

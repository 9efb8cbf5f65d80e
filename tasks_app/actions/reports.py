"""What external workers send: pushed events, reports of tasks that ran elsewhere, metrics."""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from console import vault
from console.access import Actor
from console.errors import Conflict, Invalid, NotFound, TooLarge
from console.masking import mask
from tasks_app.actions.create import _user_message
from tasks_app.actions.log import (
    _action,
    _append_activity,
    _append_events,
    _store_activity,
    _store_events,
    _task_secrets,
)
from tasks_app.actions.reads import get_agent
from tasks_app.actions.rows import TASK_ROW, _finish, _locked_task, _require_writer, _save, _snapshot
from tasks_app.actions.runs import _add_tokens
from tasks_app.models import (
    ActivityKind,
    Status,
    Task,
    TaskEvent,
)
from tasks_app.schemas import MetricsReportIn, TaskReportIn

PUSHABLE_EVENTS = {
    "chunk",
    "tool_call_request",
    "tool_call_result",
    "think",
    "analyze",
    "sub_agent_trigger",
    "auth_event",
    "plan_updated",
    "context_status",
    "process_update",
}


@_action
def push_events(actor: Actor, task_id: str, events: list[tuple[str, Any]]) -> list[TaskEvent]:
    """Events an external worker pushes: relayed to subscribers and mirrored into the activity log."""
    _require_writer(actor)
    for index, (type_, _data) in enumerate(events):
        if type_ not in PUSHABLE_EVENTS:
            raise Invalid(
                f"[{index}].type", f"{type_!r} cannot be pushed; one of {', '.join(sorted(PUSHABLE_EVENTS))}"
            )
    with transaction.atomic():
        task = _locked_task(actor, task_id)
        if task.is_finished:
            raise Conflict(
                f"Task {task.id} is already {task.status}; it takes no more events", status=task.status
            )
        secrets = _task_secrets(task) + vault.tokens_of(task)
        # One INSERT per log and one UPDATE of both counters per push, as a run's progress batch writes.
        entries = [entry for entry in (_activity_from_event(t, d) for t, d in events) if entry]
        appended = _store_activity(task, entries, secrets)
        rows = _store_events(task, events, secrets)
        counters = {"last_seq": task.last_seq} if rows else {}
        if appended:
            counters["last_activity"] = task.last_activity
        if counters:
            TASK_ROW.set(task.id, counters)
        return rows


def _activity_from_event(type_: str, data: Any) -> tuple[str, dict[str, Any]] | None:
    """The activity entry a pushed event stands for, if any (chunks are not activity)."""
    if type_ in {"think", "analyze"}:
        if isinstance(data, dict):
            thought, title = data.get("thought") or data.get("text") or "", data.get("title") or ""
        else:
            thought, title = "" if data is None else str(data), ""
        return ActivityKind.REASONING, {
            "type": type_,
            "title": str(title),
            "confidence": 1.0,
            "thought": str(thought),
        }
    if not isinstance(data, dict):
        return None
    if type_ == "tool_call_result":
        return ActivityKind.TOOL_CALL, {
            "tool_name": data.get("tool_name") or data.get("operation_id") or "tool",
            "payload": data.get("payload"),
            "result": data.get("result"),
            "is_error": bool(data.get("is_error", False)),
            "graph_item_id": data.get("graph_node_id"),
        }
    if type_ == "sub_agent_trigger":
        return ActivityKind.SUB_AGENT_TRIGGER, {
            "agent_id": data.get("agent_id", ""),
            "query": data.get("query"),
            "reasoning": data.get("reasoning") if isinstance(data.get("reasoning"), dict) else {},
        }
    if type_ == "auth_event" and data.get("type") in {
        "not_supported",
        "login_required",
        "token_issue",
        "token_ready",
    }:
        return ActivityKind.AUTH, {"type": data["type"], "data": data.get("data") or {}}
    return None


# The form of the ids the server mints (console.models.new_id): a report may not invent one, so
# an unknown id of this form and another organization's task answer alike (404).
SERVER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@_action
def report_external_task(actor: Actor, agent_id: str, data: TaskReportIn) -> Task:
    """A task that ran outside the server lands finished, with its activity and task_finished event."""
    _require_writer(actor)
    agent = get_agent(actor, agent_id)
    text = data.input or ""
    if len(text) > settings.TASK_PROMPT_MAX_CHARS:
        raise TooLarge(f"Input is {len(text)} characters; the limit is {settings.TASK_PROMPT_MAX_CHARS}")
    if data.llm_response is not None:
        _check_report_size("llm_response", data.llm_response)
    answer = data.result if data.result is not None else _response_text(data.llm_response)
    status = Status.COMPLETED if data.is_success else Status.FAILED
    with transaction.atomic():
        existing = None
        if data.id:
            existing = (
                Task.objects.select_for_update(of=("self",))
                .filter(pk=data.id, organization_id=actor.organization_id)
                .first()
            )
            if existing is None and (
                SERVER_ID.fullmatch(data.id) or Task.objects.filter(pk=data.id).exists()
            ):
                # Another organization's task answers as an unknown one: no existence oracle.
                raise NotFound(f"Task {data.id} not found")
        if existing is not None:
            if existing.agent_id != agent.id:
                raise Conflict("This task id cannot be used; omit it or choose another")
            if existing.is_finished:
                raise Conflict(f"Task {existing.id} is already {existing.status}", status=existing.status)
            task = existing
        else:
            task = Task(
                organization_id=agent.organization_id,
                agent=agent,
                created_by_key_id=actor.api_key_id,
                created_by_user_id=actor.user_id,
                input_text=text,
                source="external_report",
                status=Status.EXECUTING,
                events_streaming=True,  # its log (task_created .. task_finished) is there to stream
            )
            if data.id:
                task.id = data.id
            try:
                with transaction.atomic():
                    task.save(force_insert=True)
            except IntegrityError:  # the same new id, reported at the same moment by someone else
                raise NotFound(f"Task {data.id} not found") from None
            _append_activity(task, ActivityKind.MESSAGE, _user_message(task, text, []))
            _append_events(task, [("task_created", _snapshot(task))])
        if data.tokens:
            task.tokens = _add_tokens(task.tokens, data.tokens.model_dump())
        task.used_tools = [*(task.used_tools or []), *(data.used_tools or [])]
        if data.llm_response is not None:
            task.metrics = {
                **(task.metrics or {}),
                "llm_response": mask(data.llm_response, _task_secrets(task)),
            }
        task.started_at = task.started_at or task.created_at
        _save(task, "tokens", "used_tools", "metrics", "started_at")
        if answer:
            _append_activity(task, ActivityKind.MESSAGE, {"role": "agent", "content": {"text": answer}})
        _finish(task, status, answer, duration=float(data.duration) if data.duration else None)
    return task


def _check_report_size(what: str, value: Any) -> None:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > settings.METRICS_REPORT_MAX_BYTES:
        raise TooLarge(
            f"{what} is {size} bytes as JSON; the limit is {settings.METRICS_REPORT_MAX_BYTES}",
            limit=settings.METRICS_REPORT_MAX_BYTES,
        )


def _response_text(response: Any) -> str | None:
    """The answer text of a raw LLM response (a string, or an OpenAI-style object)."""
    if response is None or isinstance(response, str):
        return response
    if isinstance(response, dict):
        for key in ("content", "text", "output", "result"):
            if isinstance(response.get(key), str):
                return response[key]
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            if isinstance(message.get("content"), str):
                return message["content"]
    return None


@_action
def record_metrics(actor: Actor, agent_id: str, data: MetricsReportIn) -> Task:
    """Store an execution metrics report against its task (the SDK's task.report_metrics())."""
    _require_writer(actor)
    report = data.model_dump(mode="json")
    _check_report_size("Metrics report", report)
    keep = max(settings.METRICS_REPORTS_PER_TASK, 1)
    with transaction.atomic():
        task = _locked_task(actor, data.execution_id)
        if task.agent_id != agent_id:
            raise NotFound(f"Task {data.execution_id} not found for agent {agent_id}")
        # The newest reports are kept: a task's row must not grow without end.
        reports = list((task.metrics or {}).get("reports", []))[-(keep - 1) :] if keep > 1 else []
        reports.append(mask(report, _task_secrets(task)))
        task.metrics = {**(task.metrics or {}), "reports": reports}
        _save(task, "metrics")
    return task

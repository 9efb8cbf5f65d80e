"""Serialisation to the shapes of the xpander wire contract (Task JSON, events, activity).

Rules from xpander-wire.md: booleans are never null, enum fields are a valid value or null,
`user_tokens` is never echoed, no top-level `configuration` key, ids are strings, times ISO.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from console.models import Agent
from tasks_app.models import ActivityEntry, ActivityKind, Task, TaskEvent

OUTPUT_FORMATS = {"text", "markdown", "json", "voice"}
REASONING_EFFORTS = {"low", "medium", "high", "xhigh"}


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def tokens_json(tokens: dict | None) -> dict[str, int]:
    tokens = tokens or {}
    out = {
        "completion_tokens": int(tokens.get("completion_tokens", 0) or 0),
        "prompt_tokens": int(tokens.get("prompt_tokens", 0) or 0),
        "cache_read_tokens": int(tokens.get("cache_read_tokens", 0) or 0),
        "cache_write_tokens": int(tokens.get("cache_write_tokens", 0) or 0),
    }
    out["total_tokens"] = out["completion_tokens"] + out["prompt_tokens"]
    return out


def task_input_json(task: Task) -> dict[str, Any]:
    data: dict[str, Any] = {
        "text": task.input_text,
        "files": list(task.input_files or []),
        "user": task.input_user,
    }
    if task.input_attachments:
        data["attachments"] = task.input_attachments
    return data


def task_json(task: Task, sub_executions: list[str] | None = None) -> dict[str, Any]:
    """The full Task JSON the SDK parses (xpander-wire.md section 3.1)."""
    if sub_executions is None:
        sub_executions = task.sub_execution_ids()
    return {
        "id": task.id,
        "agent_id": task.agent_id,
        "organization_id": task.organization_id,
        "input": task_input_json(task),
        "status": task.status,
        "internal_status": task.internal_status,
        "result": task.result,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "events_streaming": bool(task.events_streaming),
        "is_manually_stopped": bool(task.is_manually_stopped),
        "title": task.title or None,
        "source": task.source or "api",  # the SDK's report_metrics() requires a string
        "parent_execution": task.parent_id,
        "sub_executions": sub_executions,
        "triggering_agent_id": task.triggering_agent_id or None,
        "payload_extension": task.payload_extension,
        "output_format": task.output_format if task.output_format in OUTPUT_FORMATS else None,
        "output_schema": task.output_schema,
        "additional_context": task.additional_context or None,
        "instructions_override": task.instructions_override or None,
        "expected_output": task.expected_output or None,
        "think_mode": task.think_mode if task.think_mode in {"default", "harder"} else "default",
        "disable_attachment_injection": bool(task.disable_attachment_injection),
        "tool_call_limit": task.tool_call_limit,
        "llm_model_provider": task.llm_model_provider or None,
        "llm_model_name": task.llm_model_name or None,
        "llm_reasoning_effort": task.llm_reasoning_effort
        if task.llm_reasoning_effort in REASONING_EFFORTS
        else None,
        "return_metrics": bool(task.return_metrics),
        "last_executed_node_id": task.last_executed_node_id or None,
        "agent_version": task.agent_version or None,
        "mcp_servers": [],
        "user_tokens": None,
        "tokens": tokens_json(task.tokens),
        "used_tools": list(task.used_tools or []),
        "duration": task.duration,
        "turns": task.turns,
        "execution_attempts": max(task.attempts, 1),
        "is_orchestration": False,
        "is_gateway": False,
        "is_app": False,
        "background_auth_eligible": False,
        "should_update_parent": False,
        "must_deep_plan": False,
    }


def task_list_item_json(task: Task) -> dict[str, Any]:
    """A TasksListItem (xpander-wire.md section 4.5)."""
    return {
        "id": task.id,
        "agent_id": task.agent_id,
        "organization_id": task.organization_id,
        "status": task.status,
        "internal_status": task.internal_status,
        "user_id": task.user_id or None,
        "parent_task_id": task.parent_id,
        "triggering_agent_id": task.triggering_agent_id or None,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "result": task.result,
        "title": task.title or None,
        "source_node_type": task.source or None,
    }


def task_change_json(task: Task) -> dict[str, Any]:
    """One frame of the console's live task list (/ws/tasks/)."""
    return {
        "id": task.id,
        "status": task.status,
        "internal_status": task.internal_status,
        "agent_id": task.agent_id,
        "title": task.title or None,
        "updated_at": iso(task.updated_at),
    }


def envelope(event: TaskEvent) -> dict[str, Any]:
    """A stored event as the bus and the replay carry it; the API adds the task's ids (event_json)."""
    return {"seq": event.seq, "type": event.type, "time": iso(event.time), "data": event.data}


def event_json(task_id: str, organization_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """A TaskUpdateEvent: an `envelope` with the task's ids; `data` is always present (null allowed)."""
    return {
        "seq": event["seq"],
        "type": event["type"],
        "task_id": task_id,
        "organization_id": organization_id,
        "time": event["time"],
        "data": event["data"],
    }


def activity_entry_json(entry: ActivityEntry) -> dict[str, Any]:
    """One activity entry in exactly the shape whose union member the SDK's isinstance checks expect."""
    base = {"id": entry.id, "created_at": iso(entry.created_at)}
    data = entry.data
    if entry.kind == ActivityKind.MESSAGE:
        content = data.get("content") or {}
        out = {
            **base,
            "role": data.get("role", "agent"),
            "content": {"text": content.get("text"), "files": list(content.get("files") or [])},
        }
        if data.get("user") and data["user"].get("email"):
            out["user"] = data["user"]
        return out
    if entry.kind == ActivityKind.TOOL_CALL:
        return {
            **base,
            "tool_name": data.get("tool_name", ""),
            "payload": data.get("payload"),
            "result": data.get("result"),
            "is_error": bool(data.get("is_error", False)),
            **({"graph_item_id": data["graph_item_id"]} if data.get("graph_item_id") else {}),
            **({"status": data["status"]} if data.get("status") else {}),
        }
    if entry.kind == ActivityKind.REASONING:
        return {
            **base,
            "type": data.get("type", "think") if data.get("type") in {"think", "analyze"} else "think",
            "title": data.get("title") or "",
            "confidence": float(data.get("confidence", 1.0)),
            "thought": data.get("thought"),
        }
    if entry.kind == ActivityKind.SUB_AGENT_TRIGGER:
        reasoning = data.get("reasoning") if isinstance(data.get("reasoning"), dict) else {}
        return {
            **base,
            "agent_id": data.get("agent_id", ""),
            "query": data.get("query"),
            "files": list(data.get("files") or []),
            "reasoning": reasoning,
            **({"sub_task_id": data["sub_task_id"]} if data.get("sub_task_id") else {}),
        }
    # auth: MCPOAuthGetTokenResponse plus id and created_at
    return {**base, "type": data.get("type", "token_issue"), "data": data.get("data") or {}}


def activity_thread_json(task: Task, entries: list[ActivityEntry]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.id,
        "created_at": iso(task.created_at),
        "messages": [activity_entry_json(e) for e in entries],
    }
    if task.input_user and task.input_user.get("email"):
        out["user"] = task.input_user
    return out


def agent_json(agent: Agent) -> dict[str, Any]:
    """Agent JSON parseable by the SDK's Agent model (xpander-wire.md section 5, "Read first")."""
    graph = []
    for item in agent.graph_items.all():
        entry: dict[str, Any] = {
            "id": item.key,
            "item_id": item.item_id or item.key,
            "type": item.type,
            "name": item.name or None,
            "targets": [],
            "settings": {},
        }
        if item.type == "mcp":
            mcp = {"type": "remote", "transport": "streamable-http", "auth_type": "none", **item.mcp_settings}
            mcp.setdefault("name", item.name or item.key)
            entry["settings"] = {"mcp_settings": mcp}
        graph.append(entry)
    out: dict[str, Any] = {
        "id": agent.id,
        "organization_id": agent.organization_id,
        "name": agent.name,
        "unique_name": agent.unique_name,
        "description": agent.description or None,
        "framework": "agno",  # the SDK only parses its own values; ours is execution_framework
        "model_provider": agent.model_provider,
        "model_name": agent.model_name,
        "llm_api_base": agent.model_base_url or None,
        "instructions": {"role": [], "goal": [], "general": agent.instructions or ""},
        "status": "ACTIVE",
        "type": "regular",
        "output_format": agent.output_format if agent.output_format in OUTPUT_FORMATS else None,
        "graph": graph,
        "tools": [],
        "agno_settings": {"session_storage": False},
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }
    out["execution_framework"] = agent.framework
    out["has_model_api_key"] = agent.has_model_api_key
    out["tool_call_limit"] = agent.tool_call_limit
    return out

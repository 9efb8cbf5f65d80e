"""A task's conversation, read from its event log: turns, answer text, tool calls, reasoning.

The page renders this on the server (so it works without JavaScript and a reload is instant), and
the socket brings what comes after `task.last_seq`. Tool calls pair their request and result by
`tool_call_id`, which gives each card its duration and what became of it (completed, failed, or
aborted by a stop).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from console.masking import mask
from console.web import markdown
from tasks_app.models import Task, TaskEvent


@dataclass
class Item:
    kind: str  # turn | text | think | tool | sub | auth | finished
    data: dict[str, Any] = field(default_factory=dict)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def pretty(value: Any) -> str:
    """JSON for a card (secret-named fields masked again, in case a pushed event carried one)."""
    if value is None:
        return ""
    value = mask(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def build(task: Task, events: list[TaskEvent], servers: dict[str, str]) -> list[Item]:
    """Timeline items in log order; `servers` maps graph item keys to MCP server names."""
    items: list[Item] = []
    text: Item | None = None
    tools: dict[str, Item] = {}
    turns = 0
    for event in events:
        data = event.data
        if event.type in {"task_created", "task_updated"} and isinstance(data, dict):
            turn = int(data.get("turns") or 1)
            if turn > turns:
                turns = turn
                text = None
                prompt = data.get("input") or {}
                items.append(
                    Item(
                        "turn",
                        {
                            "n": turn,
                            "text": prompt.get("text") or "",
                            "files": prompt.get("files") or [],
                            "user": (prompt.get("user") or {}).get("email") or "",
                            "time": event.time,
                        },
                    )
                )
            continue
        if event.type == "chunk":
            if text is None:
                text = Item("text", {"raw": ""})
                items.append(text)
            text.data["raw"] += data if isinstance(data, str) else ""
            continue
        text = None
        if not isinstance(data, dict):
            continue
        if event.type in {"think", "analyze"}:
            items.append(
                Item(
                    "think", {"title": data.get("title") or "Thinking", "thought": data.get("thought") or ""}
                )
            )
        elif event.type == "tool_call_request":
            key = data.get("tool_call_id") or f"seq-{event.seq}"
            item = Item("tool", _tool(data, servers) | {"state": "running", "started": event.time})
            tools[key] = item
            items.append(item)
        elif event.type == "tool_call_result":
            key = data.get("tool_call_id") or ""
            item = tools.pop(key, None)
            if item is None:
                item = Item("tool", _tool(data, servers) | {"started": None})
                items.append(item)
            is_error = bool(data.get("is_error"))
            item.data.update(
                state=data.get("status") or ("failed" if is_error else "completed"),
                result=pretty(data.get("result")),
                is_error=is_error,
                duration=_seconds(item.data.get("started"), event.time),
            )
        elif event.type == "sub_agent_trigger":
            items.append(
                Item(
                    "sub",
                    {
                        "agent_id": data.get("agent_id"),
                        "query": data.get("query") or "",
                        "task_id": data.get("sub_task_id"),
                    },
                )
            )
        elif event.type == "auth_event":
            inner = data.get("data") or {}
            items.append(
                Item(
                    "auth",
                    {
                        "type": data.get("type") or "",
                        "message": inner.get("message") or "",
                        "server": inner.get("server_name") or "",
                        "url": signin_url(inner.get("url")),
                    },
                )
            )
        elif event.type == "task_finished":
            had_text = any(i.kind == "text" for i in items[_last_turn(items) :])
            items.append(
                Item(
                    "finished",
                    {
                        "status": data.get("status"),
                        "result": data.get("result") if not had_text else None,
                        "result_html": markdown.render(data.get("result")) if not had_text else "",
                        "time": event.time,
                    },
                )
            )
    for item in items:
        if item.kind == "text":
            item.data["html"] = markdown.render(item.data["raw"])
    return items


def _last_turn(items: list[Item]) -> int:
    for index in range(len(items) - 1, -1, -1):
        if items[index].kind == "turn":
            return index
    return 0


def _tool(data: dict[str, Any], servers: dict[str, str]) -> dict[str, Any]:
    node = data.get("graph_node_id") or data.get("graph_item_id") or ""
    return {
        "id": data.get("tool_call_id") or "",
        "name": data.get("tool_name") or data.get("operation_id") or "tool",
        "server": servers.get(node, node or ""),
        "args": pretty(data.get("payload")),
        "result": "",
        "is_error": False,
        "duration": None,
    }


def tool_summary(events: list[TaskEvent]) -> list[dict[str, Any]]:
    """Per tool: calls, errors, total and slowest duration in seconds (from request/result pairs)."""
    started: dict[str, datetime] = {}
    summary: dict[str, dict[str, Any]] = {}
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "tool_call_request":
            started[data.get("tool_call_id") or ""] = event.time
        elif event.type == "tool_call_result":
            name = data.get("tool_name") or data.get("operation_id") or "tool"
            row = summary.setdefault(
                name, {"tool": name, "calls": 0, "errors": 0, "total": 0.0, "slowest": 0.0}
            )
            row["calls"] += 1
            row["errors"] += 1 if data.get("is_error") else 0
            duration = _seconds(started.pop(data.get("tool_call_id") or "", None), event.time)
            if duration is not None:
                row["total"] = round(row["total"] + duration, 3)
                row["slowest"] = max(row["slowest"], duration)
    return sorted(summary.values(), key=lambda r: (-r["calls"], r["tool"]))


def signin_url(value: Any) -> str:
    """A sign-in URL safe to link (http(s) or a path of ours); anything else (javascript:) is dropped."""
    if not isinstance(value, str):
        return ""
    if value.startswith("/") and not value.startswith("//"):
        return value
    return value if value.startswith(("https://", "http://")) else ""

"""What pydantic-ai's stream events become in our logs: event tuples and activity entries.

Pure functions, no I/O: the runner hands each library event here with the run's tool
bookkeeping and writes what comes back. Library types stop at this module; our event types
(chunk, think, tool_call_request, tool_call_result) and activity shapes come out. Events are told
apart by pydantic-ai's own discriminators (event_kind, part_kind), so importing this module does
not load pydantic-ai: the server starts without it and a worker loads it on its first run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tasks_app.models import ActivityKind

ABORTED = "aborted: the task was stopped while this tool call was running"
CHUNK = "chunk"  # the one event type the sink coalesces instead of writing as it comes

# (event type, event data, activity entry or None); for CHUNK the data is the text delta.
Output = tuple[str, Any, tuple[str, dict[str, Any]] | None]


@dataclass
class ToolCalls:
    """A run's tool bookkeeping: each tool's graph item, the calls in flight, the tools used."""

    items: dict[str, str] = field(default_factory=dict)  # tool name -> graph item key
    inflight: dict[str, dict[str, Any]] = field(default_factory=dict)  # tool call id -> request data
    used: list[str] = field(default_factory=list)


@dataclass
class Batch:
    """What the sink writes next: text deltas joined into one chunk before the event after them."""

    text: list[str] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)
    activity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, output: Output) -> None:
        type_, data, entry = output
        if type_ == CHUNK:
            if data:
                self.text.append(data)
            return
        self._join_text()
        self.events.append((type_, data))
        if entry:
            self.activity.append(entry)

    def add_entry(self, kind: str, data: dict[str, Any]) -> None:
        """An activity entry with no event (it still comes after the text before it)."""
        self._join_text()
        self.activity.append((kind, data))

    @property
    def only_text(self) -> bool:
        """Nothing but text yet: worth waiting a moment for more of it."""
        return bool(self.text) and not self.events and not self.activity

    def take(self) -> tuple[list[tuple[str, Any]], list[tuple[str, dict[str, Any]]]]:
        """(events, activity entries) gathered so far, the text joined in; the batch starts empty."""
        self._join_text()
        events, activity = self.events, self.activity
        self.events, self.activity = [], []
        return events, activity

    def _join_text(self) -> None:
        if self.text:
            self.events.append((CHUNK, "".join(self.text)))
            self.text = []


def slug(text: str) -> str:
    """A name usable as a tool or toolset id (lower-case letters, digits, underscores)."""
    return re.sub(r"[^a-zA-Z0-9_]+", "_", text).strip("_").lower()[:48] or "agent"


def map_event(event: Any, calls: ToolCalls) -> list[Output]:
    """Our events for one library stream event (text deltas, thoughts, tool calls and results)."""
    kind = getattr(event, "event_kind", None)
    if kind == "part_start" and event.part.part_kind == "text":
        return _chunk(event.part.content)
    if kind == "part_delta" and event.delta.part_delta_kind == "text":
        return _chunk(event.delta.content_delta)
    if kind == "part_end" and event.part.part_kind == "thinking":
        return think(event.part.content or "")
    if kind == "function_tool_call":
        return [tool_call_request(event.part, calls)]
    if kind == "function_tool_result":
        return [tool_call_result(event.part, calls)]
    return []


def _chunk(text: str) -> list[Output]:
    return [(CHUNK, text, None)] if text else []


def think(thought: str) -> list[Output]:
    """A finished thinking part: a think event and its reasoning entry (nothing when empty)."""
    if not thought:
        return []
    data = {"type": "think", "title": "Thinking", "confidence": 1.0, "thought": thought}
    return [("think", data, (ActivityKind.REASONING, data))]


def tool_call_request(part: Any, calls: ToolCalls) -> Output:
    """A tool call the model made, tagged with its graph item and remembered until its result."""
    item = calls.items.get(part.tool_name)
    call = {
        "request_id": part.tool_call_id,
        "operation_id": part.tool_name,
        "tool_call_id": part.tool_call_id,
        "graph_node_id": item,
        "graph_item_id": item,
        "tool_name": part.tool_name,
        "payload": _payload(part),
    }
    calls.inflight[part.tool_call_id] = call
    calls.used.append(part.tool_name)
    return ("tool_call_request", call, None)


def tool_call_result(part: Any, calls: ToolCalls) -> Output:
    """A tool's result paired with its request (the activity log keeps one entry per call)."""
    call = calls.inflight.pop(part.tool_call_id, None) or {
        "tool_call_id": part.tool_call_id,
        "tool_name": part.tool_name,
        "payload": None,
    }
    is_error = getattr(part, "outcome", "success") != "success"
    data = {
        **call,
        "result": _result_json(part.content),
        "is_error": is_error,
        "status": "failed" if is_error else "completed",
    }
    return ("tool_call_result", data, (ActivityKind.TOOL_CALL, data))


def aborted(calls: ToolCalls) -> list[Output]:
    """Results for the calls still running when the task was stopped."""
    outputs = []
    for call in calls.inflight.values():
        data = {**call, "result": ABORTED, "is_error": True, "status": "aborted"}
        outputs.append(("tool_call_result", data, (ActivityKind.TOOL_CALL, data)))
    return outputs


def run_result(event: Any) -> tuple[str, dict[str, int]] | None:
    """The run's final output as text (JSON for structured output) and its token usage, or None
    when `event` is not the run's result."""
    if getattr(event, "event_kind", None) != "agent_run_result":
        return None
    return run_output(event.result)


def run_output(result: Any) -> tuple[str, dict[str, int]]:
    """A finished run's output as text (JSON for structured output) and its token usage."""
    output = result.output
    text = output if isinstance(output, str) else json.dumps(output)
    u = result.usage
    usage = {
        "prompt_tokens": u.input_tokens or 0,
        "completion_tokens": u.output_tokens or 0,
        "cache_read_tokens": u.cache_read_tokens or 0,
        "cache_write_tokens": u.cache_write_tokens or 0,
    }
    return text, usage


def error_message(result: str | None) -> tuple[str, dict[str, Any]]:
    """The agent message entry that tells the user how a failed run ended."""
    return ActivityKind.MESSAGE, {"role": "agent", "content": {"text": f"Error: {result}"}}


def _payload(part: Any) -> Any:
    try:
        return part.args_as_dict()
    except Exception:
        return part.args


def _result_json(content: Any) -> Any:
    if isinstance(content, str | int | float | bool) or content is None:
        return content
    try:
        json.dumps(content)
        return content
    except TypeError:
        return str(content)

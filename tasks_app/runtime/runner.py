"""Running one turn of a built-in agent's task on pydantic-ai, mapped onto our logs.

Library types stay here: what reaches the database and the API are our event types and activity
shapes. Tokens live in memory only for the run and are masked out of everything written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx2
from asgiref.sync import sync_to_async

from console.models import Agent, GraphItem
from tasks_app import actions, bus
from tasks_app.masking import mask
from tasks_app.models import TERMINAL_STATUSES, ActivityKind, Status, Task
from tasks_app.runtime import files, llm, outbound
from tasks_app.schemas import TaskCreateIn

log = logging.getLogger(__name__)
ABORTED = "aborted: the task was stopped while this tool call was running"
SHUTDOWN = "worker-shutdown"  # cancel message: release the task instead of stopping it


class McpAuthFailed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class BearerAuth(httpx2.Auth):
    """Sends the user's token and turns a 401/403 into McpAuthFailed (the MCP client would hide it)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def auth_flow(self, request):
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code in (401, 403):
            raise McpAuthFailed(response.status_code)


class TaskFailure(Exception):
    """Ends the task as failed with a message the user can act on."""

    def __init__(self, message: str, status: str = Status.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class RunState:
    task: Task
    agent: Agent
    items: list[GraphItem]
    tokens: dict[str, Any]
    secrets: list[str]
    stored: dict[str, str] = field(default_factory=dict)  # the vault's tokens of the turn's user, by item key
    tool_items: dict[str, str] = field(default_factory=dict)  # tool name -> graph item key
    inflight: dict[str, dict[str, Any]] = field(default_factory=dict)
    used_tools: list[str] = field(default_factory=list)


def _load(
    task_id: str,
) -> tuple[Task, Agent, list[GraphItem], dict[str, Any], dict[str, str], list[dict[str, Any]]]:
    """Everything a turn reads from the database, read once in a thread (no ORM on the event loop)."""
    from console import vault

    task = Task.objects.select_related("agent").get(pk=task_id)
    agent = task.agent
    items = list(agent.graph_items.all())
    tokens = actions.task_user_tokens(task)
    mcp_keys = [i.key for i in items if i.type == "mcp"]
    stored = vault.tokens_for(task.organization_id, vault.owner_of(task), mcp_keys)
    history = [
        {"kind": e.kind, "turn": e.turn, "data": e.data}
        for e in task.activity.filter(turn__lt=task.turns).order_by("position")
    ]
    return task, agent, items, tokens, stored, history


aload = sync_to_async(_load)


def _secrets(agent: Agent, tokens: dict[str, Any], items: list[GraphItem]) -> list[str]:
    found = [v for v in tokens.values() if isinstance(v, str)]
    for value in tokens.values():
        if isinstance(value, dict):
            found += [v for v in value.values() if isinstance(v, str)]
    key = agent.get_model_api_key()
    if key:
        found.append(key)
    found += [v for v in llm.environment_keys() if v]
    for item in items:
        for value in item.secret_settings().values():
            found += [value] if isinstance(value, str) else [v for v in value.values() if isinstance(v, str)]
    return found


def token_for(state: RunState, item: GraphItem) -> tuple[str | None, dict[str, str]]:
    """(bearer token, extra headers) for an MCP graph item: the task's token, else a stored one."""
    value = state.tokens.get(item.key)
    if isinstance(value, dict):
        return None, dict(value)
    if isinstance(value, str):
        return value, {}
    secret = item.secret_settings()
    headers = dict(secret.get("headers") or {})
    stored = state.stored.get(item.key)
    if stored:
        return stored, headers
    return secret.get("api_key"), headers


def instructions(task: Task, agent: Agent) -> str:
    parts = [task.instructions_override or agent.instructions or "You are a helpful assistant."]
    if task.additional_context:
        parts.append(f"Additional context:\n{task.additional_context}")
    if task.expected_output:
        parts.append(f"Expected output:\n{task.expected_output}")
    if task.output_format == "json":
        schema = f" matching this JSON schema: {json.dumps(task.output_schema)}" if task.output_schema else ""
        parts.append(f"Answer with JSON only{schema}.")
    elif task.output_format == "markdown":
        parts.append("Format the answer as Markdown.")
    return "\n\n".join(parts)


def history_messages(entries: list[dict[str, Any]]) -> list[Any]:
    """Earlier turns rebuilt from the activity log as pydantic-ai messages."""
    from pydantic_ai.messages import (
        ModelRequest,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )

    messages: list[Any] = []
    for entry in entries:
        data = entry["data"]
        if entry["kind"] == ActivityKind.MESSAGE:
            text = (data.get("content") or {}).get("text") or ""
            if data.get("role") == "user":
                messages.append(ModelRequest(parts=[UserPromptPart(content=text)]))
            else:
                messages.append(ModelResponse(parts=[TextPart(content=text)]))
        elif entry["kind"] == ActivityKind.TOOL_CALL and data.get("tool_call_id"):
            call_id = data["tool_call_id"]
            args = data.get("payload") if isinstance(data.get("payload"), dict) else {}
            messages.append(
                ModelResponse(parts=[ToolCallPart(data["tool_name"], args, tool_call_id=call_id)])
            )
            result = data.get("result")
            content = result if isinstance(result, str) else json.dumps(result)
            messages.append(
                ModelRequest(parts=[ToolReturnPart(data["tool_name"], content, tool_call_id=call_id)])
            )
    return messages


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]+", "_", text).strip("_").lower()[:48] or "agent"


async def wait_finished(task_id: str) -> Task:
    """Wait until a task reaches a final status (channel-layer nudges, the log as the truth)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(bus.group_name(task_id), channel)
    try:
        while True:
            task = await sync_to_async(Task.objects.get)(pk=task_id)
            if task.status in TERMINAL_STATUSES:
                return task
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(layer.receive(channel), timeout=2.0)
    finally:
        await layer.group_discard(bus.group_name(task_id), channel)


def sub_agent_tool(state: RunState, item: GraphItem, sink, sub_agent: Agent):
    """A tool that delegates to another agent through a child task, and returns its result."""
    from pydantic_ai import Tool

    name = f"ask_{_slug(sub_agent.unique_name or sub_agent.name)}"
    state.tool_items[name] = item.key
    parent = state.task

    async def delegate(query: str) -> str:
        child = await actions.acreate_task(
            actions.Actor(parent.organization_id, actions.SYSTEM),
            sub_agent.id,
            TaskCreateIn.model_validate(
                {
                    "input": {"text": query, "user": parent.input_user},
                    "events_streaming": True,
                    "user_tokens": state.tokens or None,
                    "triggering_agent_id": parent.agent_id,
                }
            ),
            parent=parent,
        )
        reasoning = {"title": f"Delegating to {sub_agent.name}", "description": query[:500]}
        sink.event(
            "sub_agent_trigger",
            {"agent_id": sub_agent.id, "query": query, "sub_task_id": child.id, "reasoning": reasoning},
            (
                ActivityKind.SUB_AGENT_TRIGGER,
                {"agent_id": sub_agent.id, "query": query, "reasoning": reasoning, "sub_task_id": child.id},
            ),
        )
        done = await wait_finished(child.id)
        if done.status != Status.COMPLETED:
            return f"The sub-agent {sub_agent.name} ended {done.status}: {done.result or ''}"
        return done.result or ""

    return Tool(
        delegate, name=name, description=f"Ask the agent {sub_agent.name!r}: {sub_agent.description or ''}"
    )


async def _enter_toolsets(state: RunState, sink, stack: contextlib.AsyncExitStack) -> list[Any]:
    """Connect each MCP server as the task's user; sign-in problems become auth events, not crashes."""
    from pydantic_ai.mcp import MCPToolset

    ready = []
    for item in state.items:
        if item.type != "mcp":
            continue
        mcp = item.mcp_settings
        url, server_name = mcp.get("url", ""), mcp.get("name") or item.name or item.key
        token, headers = token_for(state, item)  # the vault was read in the load step
        state.secrets.extend(t for t in [token, *headers.values()] if t)  # vault tokens are masked too
        try:
            await outbound.check_url(url)
        except outbound.OutboundRefused as exc:
            raise TaskFailure(f"MCP server {server_name} ({url}): {exc}") from None
        # One guarded client per server and run: its cookies are this user's only.
        http = outbound.client(
            headers=headers or None, verify=_tls_context(), timeout=httpx2.Timeout(30.0, read=300.0)
        )
        stack.push_async_callback(http.aclose)
        toolset = MCPToolset(
            url,
            id=f"mcp-{_slug(item.key)}",
            auth=BearerAuth(token),
            http_client=http,
            tool_error_behavior="failed",
        )
        try:
            await stack.enter_async_context(toolset)
            tools = await toolset.list_tools()
        except Exception as exc:
            cause = _auth_cause(exc)
            if cause is None:
                refused = outbound.refusal_in(exc)
                reason = str(refused) if refused else f"is unreachable ({_remote_error(exc)})"
                raise TaskFailure(f"MCP server {server_name} ({url}) {reason}") from None
            kind = "login_required" if mcp.get("auth_type") == "oauth2" and not token else "token_issue"
            message = (
                f"{server_name} needs you to sign in"
                if not token
                else f"{server_name} rejected the token (HTTP {cause.status})"
            )
            data = {"message": message, "server_url": url, "server_name": server_name}
            if kind == "login_required":
                kind = "token_issue"  # no sign-in URL until the vault's OAuth flow exists
            sink.event(
                "auth_event", {"type": kind, "data": data}, (ActivityKind.AUTH, {"type": kind, "data": data})
            )
            continue
        allowed = set(mcp.get("allowed_tools") or [])
        for tool in tools:
            state.tool_items[tool.name] = item.key
        ready.append(
            toolset.filtered(lambda ctx, td, allowed=allowed: not allowed or td.name in allowed)
            if allowed
            else toolset
        )
    return ready


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every MCP connection: loading the CA bundle per run cost ~80 ms of CPU."""
    return ssl.create_default_context()


def _auth_cause(exc: BaseException) -> McpAuthFailed | None:
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen or current is None:
            continue
        seen.add(id(current))
        if isinstance(current, McpAuthFailed):
            return current
        stack += [current.__cause__, current.__context__]
        stack += list(getattr(current, "exceptions", []) or [])
    return None


def _remote_error(exc: BaseException) -> str:
    """What went wrong talking to a server, without its words: an error body must not reach a result."""
    inner = exc
    while getattr(inner, "exceptions", None):
        inner = inner.exceptions[0]
    status = getattr(getattr(inner, "response", None), "status_code", None)
    return f"{type(inner).__name__}, HTTP {status}" if status else type(inner).__name__


_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _error_code(body: Any) -> str | None:
    """A provider's error code (rate_limit_error, model_not_found), the one part of a body worth showing."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, str) and value != "error" and _ERROR_CODE.match(value):
            return value
    return None


def _describe(exc: BaseException) -> str:
    inner = exc
    while getattr(inner, "exceptions", None):
        inner = inner.exceptions[0]
    return f"{type(inner).__name__}: {inner}"[:300]


def _payload(part) -> Any:
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


async def run_turn(task_id: str, worker_id: str) -> None:
    """Execute the current turn of a claimed task and finish it (completed, failed, or stopped)."""
    from tasks_app.runtime.sink import EventSink

    task, agent, items, tokens, stored, history = await aload(task_id)
    state = RunState(
        task, agent, items, tokens, _secrets(agent, tokens, items) + list(stored.values()), stored
    )
    sink = EventSink(task_id, state.secrets, worker_id)
    status, result = Status.COMPLETED, None
    usage: dict[str, int] = {}
    try:
        output, usage = await _run(state, sink, history)
        status, result = Status.COMPLETED, output
    except asyncio.CancelledError as cancelled:
        if SHUTDOWN in cancelled.args:  # the worker is going away: hand the task back, do not stop it
            await sink.close()
            await actions.arelease_task(task_id, worker_id)
            raise
        for call in state.inflight.values():
            data = {**call, "result": ABORTED, "is_error": True, "status": "aborted"}
            sink.event("tool_call_result", data, (ActivityKind.TOOL_CALL, data))
        await sink.close()
        await actions.afinish_task(
            task_id, Status.STOPPED, "Stopped by request", worker_id=worker_id, used_tools=state.used_tools
        )
        raise
    except TaskFailure as exc:
        status, result = exc.status, exc.message
    except llm.ModelConfigError as exc:
        status, result = Status.FAILED, str(exc)
    except Exception as exc:
        status, result = _classify(exc, task, state.secrets)
        if status == Status.ERROR:
            log.exception("task %s crashed", task_id)
    if status != Status.COMPLETED:
        sink.activity(ActivityKind.MESSAGE, {"role": "agent", "content": {"text": f"Error: {result}"}})
    await sink.close()
    result = mask(result, state.secrets)
    await actions.afinish_task(
        task_id,
        status,
        result,
        worker_id=worker_id,
        tokens=usage,
        used_tools=state.used_tools,
        final_message=result if status == Status.COMPLETED else None,
    )


def _classify(exc: Exception, task: Task, secrets: list[str]) -> tuple[str, str]:
    from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError, UsageLimitExceeded

    if isinstance(exc, UsageLimitExceeded):
        return (
            Status.FAILED,
            f"Tool call limit reached ({task.tool_call_limit} calls) before the agent finished",
        )
    refused = outbound.refusal_in(exc)
    if refused:
        return Status.FAILED, f"The model endpoint was refused: {refused}"
    if isinstance(exc, ModelHTTPError):
        kind = "rate limited the request" if exc.status_code == 429 else f"answered HTTP {exc.status_code}"
        when = "mid-stream" if getattr(exc, "in_stream", False) else f"after {llm.MODEL_RETRIES} retries"
        # The body stays out of the result (an error page is an oracle); the operator's log has it.
        log.warning("task %s: the model %s: %s", task.id, kind, mask(str(exc.body)[:500], secrets))
        code = _error_code(exc.body)
        return Status.FAILED, f"The model {kind} {when}" + (f" ({code})" if code else "")
    if isinstance(exc, ModelAPIError):
        return Status.FAILED, f"The model could not be reached ({type(exc.__cause__ or exc).__name__})"
    cause = _auth_cause(exc)
    if cause:
        return Status.FAILED, f"An MCP server rejected the credentials (HTTP {cause.status})"
    return Status.ERROR, f"The run failed unexpectedly: {_describe(exc)}"


async def _run(state: RunState, sink, history: list[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    from pydantic_ai import Agent as PaiAgent
    from pydantic_ai import BinaryContent
    from pydantic_ai.messages import (
        FunctionToolCallEvent,
        FunctionToolResultEvent,
        PartDeltaEvent,
        PartEndEvent,
        PartStartEvent,
        TextPart,
        TextPartDelta,
        ThinkingPart,
    )
    from pydantic_ai.run import AgentRunResultEvent
    from pydantic_ai.usage import UsageLimits

    task, agent = state.task, state.agent
    model = llm.build_model(task, agent)
    try:
        await outbound.check_url(llm.resolve(task, agent)[2])
    except outbound.OutboundRefused as exc:
        raise TaskFailure(f"The model endpoint was refused: {exc}") from None
    prepared = await files.prepare(
        task.input_text,
        list(task.input_files or []),
        list(task.input_attachments or []),
        native_pdf=llm.supports_native_pdf(task, agent),
        uploads=dict(task.uploads or {}),
        inject=not task.disable_attachment_injection,
    )
    failed = [n for n in prepared.notes if n.startswith("could not read")]
    if failed:
        raise TaskFailure("A file of this task could not be fetched: " + "; ".join(failed))
    prompt: list[Any] = [prepared.text]
    prompt += [BinaryContent(data, media_type=media) for _, data, media in prepared.images]
    prompt += [BinaryContent(data, media_type="application/pdf") for _, data in prepared.documents]

    sub_agents = {
        a.id: a
        for a in await sync_to_async(list)(
            Agent.objects.filter(
                pk__in=[i.item_id for i in state.items if i.type == "agent"],
                organization_id=task.organization_id,
            )
        )
    }
    tools = [
        sub_agent_tool(state, i, sink, sub_agents[i.item_id])
        for i in state.items
        if i.type == "agent" and i.item_id in sub_agents
    ]
    limits = UsageLimits(tool_calls_limit=task.tool_call_limit, request_limit=None)
    output, usage = "", {}
    async with contextlib.AsyncExitStack() as stack:
        toolsets = await _enter_toolsets(state, sink, stack)
        pai = PaiAgent(model, instructions=instructions(task, agent), tools=tools)
        async with pai.run_stream_events(
            prompt, message_history=history_messages(history) or None, toolsets=toolsets, usage_limits=limits
        ) as stream:
            async for event in stream:
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    sink.chunk(event.part.content)
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    sink.chunk(event.delta.content_delta)
                elif isinstance(event, PartEndEvent) and isinstance(event.part, ThinkingPart):
                    thought = event.part.content or ""
                    if thought:
                        data = {"type": "think", "title": "Thinking", "confidence": 1.0, "thought": thought}
                        sink.event("think", data, (ActivityKind.REASONING, data))
                elif isinstance(event, FunctionToolCallEvent):
                    part = event.part
                    call = {
                        "request_id": part.tool_call_id,
                        "operation_id": part.tool_name,
                        "tool_call_id": part.tool_call_id,
                        "graph_node_id": state.tool_items.get(part.tool_name),
                        "graph_item_id": state.tool_items.get(part.tool_name),
                        "tool_name": part.tool_name,
                        "payload": _payload(part),
                    }
                    state.inflight[part.tool_call_id] = call
                    state.used_tools.append(part.tool_name)
                    sink.event("tool_call_request", call)
                elif isinstance(event, FunctionToolResultEvent):
                    part = event.part
                    call = state.inflight.pop(part.tool_call_id, None) or {
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
                    sink.event("tool_call_result", data, (ActivityKind.TOOL_CALL, data))
                elif isinstance(event, AgentRunResultEvent):
                    output = (
                        event.result.output
                        if isinstance(event.result.output, str)
                        else json.dumps(event.result.output)
                    )
                    u = event.result.usage
                    usage = {
                        "prompt_tokens": u.input_tokens or 0,
                        "completion_tokens": u.output_tokens or 0,
                        "cache_read_tokens": u.cache_read_tokens or 0,
                        "cache_write_tokens": u.cache_write_tokens or 0,
                    }
    return output, usage

"""Backend: the keyword arguments for `agno.agent.Agent(**args)`, built from an agent and a task.

`Backend().get_args(agent_id=..., task=...)` reads the agent (`GET /agents/{id}`), asks the server
for the task user's token of each MCP graph item (`POST /mcp_auth/{agent_id}/{user_id}/get_token`,
xpander-wire.md section 6), checks that each MCP server answers an `initialize` with that token, and
returns the agent's model, instructions and MCP servers as agno objects. An MCP server that cannot
be used this run (no user, no token, token rejected, unreachable) is left out and named in
`additional_context`, so the model can tell the user.

agno is optional: it is imported only here, only when get_args runs (`pip install agno "mcp<2"`).
The model's API key never comes from the server: OPENAI_API_KEY / ANTHROPIC_API_KEY (or
`model_api_key=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from tasks_app.client.agents import Agent, Agents
from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException
from tasks_app.client.models.agent import AgentGraphItem, MCPServerDetails
from tasks_app.client.task import Task, segment
from tasks_app.client.transport import Call, asend, parse, send, ssl_context

AGNO_INSTALL = 'pip install agno "mcp<2"'
OLLAMA_DEFAULT = "http://127.0.0.1:11434/v1"  # as the server's own runtime
PROBE_TIMEOUT = 10.0  # seconds for the MCP `initialize` check of each server
MCP_TIMEOUT = timedelta(seconds=120)  # agno's MCP session: each request and tool call
MCP_SSE_READ_TIMEOUT = timedelta(minutes=20)
PROBE_BODY = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-03-26",
        "capabilities": {},
        "clientInfo": {"name": "tasks_app.client", "version": "1"},
    },
}


class AgnoNotInstalled(ModuleException, ImportError):
    """get_args needs agno (and the MCP client, or anthropic for Claude); the message says what to install."""


class _AgentConfig(Agent):
    """The agent with the fields get_args needs beyond the Agents module's view."""

    llm_api_base: str | None = None
    tool_call_limit: int | None = None


@dataclass
class _Server:
    """One MCP graph item on its way to an agno MCPTools (or to a note)."""

    item: AgentGraphItem
    details: MCPServerDetails
    headers: dict[str, str] | None = None  # set once we know how to call it
    needs_token: bool = False  # ask the server's get_token route
    note: str | None = None  # why it is left out

    @property
    def name(self) -> str:
        return self.details.name or self.item.name or self.details.url or str(self.item.id)

    @property
    def url(self) -> str:
        return self.details.url or ""

    @property
    def ready(self) -> bool:
        return self.headers is not None and self.note is None

    def skip(self, reason: str) -> None:
        self.note = f"{self.name}: {reason}"


@dataclass
class _Plan:
    agent: _AgentConfig
    task: Task | None
    servers: list[_Server] = field(default_factory=list)

    @property
    def user_id(self) -> str | None:
        user = self.task.input.user if self.task else None
        return user.id if user and user.id else None


def _require_agno() -> None:
    try:
        for module in ("agno.agent", "agno.tools.mcp"):  # agno.tools.mcp imports mcp
            importlib.import_module(module)
    except ImportError as exc:
        raise AgnoNotInstalled(
            500,
            f"Backend.get_args builds agno agents and needs agno with the MCP client: {AGNO_INSTALL} ({exc})",
        ) from None


# ---- what to ask the server ---------------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _without_user_token(details: MCPServerDetails) -> dict[str, str] | None:
    """The headers to call a server with when no user token is at hand, or None if it needs one."""
    auth_type = (details.auth_type or "none").lower()
    if details.api_key:
        return {**details.headers, **_bearer(details.api_key)}
    if auth_type == "none" or (auth_type == "custom_headers" and details.headers):
        return dict(details.headers)
    return None


def _plan(agent: _AgentConfig, task: Task | None) -> _Plan:
    """Decide, per MCP graph item, whether it needs the token route, can go as is, or is left out."""
    plan = _Plan(agent, task)
    given = (task.user_tokens if task else None) or {}  # only on a Task built locally: never echoed
    for item in agent.graph.mcp_items():
        details = (item.settings.mcp_settings or MCPServerDetails()).model_copy(deep=True)
        if not details.id:  # lets the server match this graph item even when two share a url
            details.id = item.item_id or item.id
        server = _Server(item, details)
        plan.servers.append(server)
        token = given.get(item.id) if item.id else None
        if details.type == "local" or details.transport == "stdio" or not details.url:
            server.skip("unavailable - only remote MCP servers (a url) are supported by this client.")
        elif isinstance(token, str):
            server.headers = {**details.headers, **_bearer(token)}
        elif isinstance(token, dict):  # as upstream: a dict replaces the server's headers
            server.headers = {str(k): str(v) for k, v in token.items()}
        elif plan.user_id:
            server.needs_token = True
        elif (fallback := _without_user_token(details)) is not None:
            server.headers = fallback
        else:
            server.skip(
                "unavailable - requires a signed-in user (this run has no user). If asked to use it, "
                "tell the user it needs authentication/connection."
            )
    return plan


def _token_call(plan: _Plan, server: _Server) -> Call:
    user_id = plan.user_id or ""
    if server.details.share_user_token_across_other_agents is False:
        user_id = f"{plan.agent.id}_{user_id}"
    return Call(
        "get the user's MCP token",
        "POST",
        f"/mcp_auth/{segment(plan.agent.id)}/{segment(user_id)}/get_token",
        json=server.details.model_dump(mode="json"),
        params={
            "generate_login_url": True,
            "is_app": bool(plan.task and plan.task.is_app),
            "force_refresh": False,
        },
    )


def _take_token(plan: _Plan, server: _Server, answer: Any) -> None:
    """Apply the get_token answer: a token, no auth needed, or a note saying why it is left out."""
    server.needs_token = False
    fallback = _without_user_token(server.details)
    if isinstance(answer, ModuleException):
        kind, data = "error", {"message": answer.description}
    elif isinstance(answer, dict) and isinstance(answer.get("data"), dict):
        kind, data = str(answer.get("type")), answer["data"]
    else:
        kind, data = "error", {"message": "the server's get_token answer was not understood"}
    token = data.get("access_token")
    if kind == "token_ready" and isinstance(token, str) and token:
        server.headers = {**server.details.headers, **_bearer(token)}
    elif kind == "not_supported":
        server.headers = dict(server.details.headers)
    elif fallback is not None:
        server.headers = fallback
    elif kind == "login_required":
        where = f" at {data['url']}" if data.get("url") else ""
        server.skip(
            f"unavailable - user {plan.user_id} has to sign in{where} first. If asked to use it, "
            "tell the user it needs authentication/connection."
        )
    else:
        message = data.get("message") or f"no token for user {plan.user_id}"
        server.skip(f"unavailable - {str(message).rstrip('.')}.")


# ---- checking that a server answers ---------------------------------------------------------------


def _probe_headers(server: _Server) -> dict[str, str]:
    return {
        **(server.headers or {}),
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }


def _probe_note(server: _Server, status: int | None, error: Exception | None) -> None:
    has_token = any(k.lower() == "authorization" for k in server.headers or {})
    if error is not None:
        reason = str(error) or type(error).__name__
        server.skip(f"temporarily unavailable (could not connect this run: {reason}).")
    elif status in (401, 403):
        server.skip(
            f"unavailable - it rejected the user's token (HTTP {status}). If asked to use it, tell the "
            "user to reconnect it."
            if has_token
            else f"unavailable - it needs authentication (HTTP {status}) and this run has no token for it."
        )
    elif status is not None and not 200 <= status < 300:
        server.skip(f"temporarily unavailable (HTTP {status} to initialize).")


def _probed(server: _Server) -> bool:
    """SSE servers (the deprecated transport) have no POST endpoint to knock on: agno connects them."""
    return server.ready and (server.details.transport or "streamable-http") != "sse"


def _probe(server: _Server) -> None:
    status, error = None, None
    headers = _probe_headers(server)
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT, verify=ssl_context()) as client:
            with client.stream("POST", server.url, headers=headers, json=PROBE_BODY) as response:
                status, session = response.status_code, response.headers.get("mcp-session-id")
            if session:  # end the session we opened
                with contextlib.suppress(httpx.HTTPError):
                    client.delete(server.url, headers={**headers, "mcp-session-id": session})
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = exc
    _probe_note(server, status, error)


async def _aprobe(server: _Server) -> None:
    status, error = None, None
    headers = _probe_headers(server)
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, verify=ssl_context()) as client:
            async with client.stream("POST", server.url, headers=headers, json=PROBE_BODY) as response:
                status, session = response.status_code, response.headers.get("mcp-session-id")
            if session:
                with contextlib.suppress(httpx.HTTPError):
                    await client.delete(server.url, headers={**headers, "mcp-session-id": session})
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = exc
    _probe_note(server, status, error)


# ---- building the agno objects --------------------------------------------------------------------


def _key(explicit: str | None, env: str, provider: str) -> str:
    key = explicit or os.environ.get(env)
    if not key:
        raise ModuleException(
            401,
            f"No API key for model provider {provider}: set {env} or pass model_api_key=... "
            "(the server never returns the model's key)",
        )
    return key


def _model(plan: _Plan, model_api_key: str | None) -> Any:
    agent, task = plan.agent, plan.task
    provider = ((task.llm_model_provider if task else None) or agent.model_provider or "openai").lower()
    name = (task.llm_model_name if task else None) or agent.model_name
    if not name:
        raise ModuleException(422, f"Agent {agent.name!r} has no model_name")
    base_url = agent.llm_api_base or (OLLAMA_DEFAULT if provider == "ollama" else None)
    if provider == "anthropic":
        key = _key(model_api_key, "ANTHROPIC_API_KEY", provider)
        try:
            from agno.models.anthropic import Claude
        except ImportError as exc:
            raise AgnoNotInstalled(
                500, f"Claude models need the anthropic package: pip install anthropic ({exc})"
            ) from None
        return Claude(id=name, api_key=key, client_params={"base_url": base_url} if base_url else None)
    if provider == "openai":
        from agno.models.openai import OpenAIChat

        return OpenAIChat(id=name, api_key=_key(model_api_key, "OPENAI_API_KEY", provider), base_url=base_url)
    if provider in {"openai_compatible", "ollama"}:
        if not base_url:
            raise ModuleException(
                422, f"Agent {agent.name!r} uses an OpenAI-compatible provider but has no model_base_url"
            )
        from agno.models.openai.like import OpenAILike

        # No environment key here: an OPENAI_API_KEY must not travel to another provider's endpoint.
        return OpenAILike(id=name, base_url=base_url, api_key=model_api_key or "not-provided")
    raise ModuleException(
        422, f"Unknown model provider {provider!r}; use one of anthropic, ollama, openai, openai_compatible"
    )


def _mcp_tools(server: _Server) -> Any:
    from agno.tools.mcp import MCPTools, SSEClientParams, StreamableHTTPClientParams

    params: Any
    if server.details.transport == "sse":
        transport = "sse"
        params = SSEClientParams(
            url=server.url,
            headers=server.headers,
            timeout=MCP_TIMEOUT.total_seconds(),
            sse_read_timeout=MCP_SSE_READ_TIMEOUT.total_seconds(),
        )
    else:
        transport = "streamable-http"
        params = StreamableHTTPClientParams(
            url=server.url,
            headers=server.headers,
            timeout=MCP_TIMEOUT,
            sse_read_timeout=MCP_SSE_READ_TIMEOUT,
            terminate_on_close=True,
        )
    return MCPTools(
        transport=transport,
        server_params=params,
        include_tools=server.details.allowed_tools or None,
        timeout_seconds=int(MCP_TIMEOUT.total_seconds()),
    )


def _instructions(plan: _Plan) -> str | None:
    if plan.task and plan.task.instructions_override:
        return plan.task.instructions_override
    given = plan.agent.instructions
    return "\n".join(part for part in [given.general, *given.role, *given.goal] if part) or None


def _build(
    plan: _Plan,
    override: dict[str, Any] | None,
    tools: Sequence[Any] | None,
    model_api_key: str | None,
) -> dict[str, Any]:
    agent, task = plan.agent, plan.task
    override = dict(override or {})
    args: dict[str, Any] = {
        "id": agent.id,
        "name": agent.name,
        "model": override["model"] if "model" in override else _model(plan, model_api_key),
        "instructions": _instructions(plan),
        "tools": [_mcp_tools(s) for s in plan.servers if s.ready],
        "telemetry": False,
    }
    if agent.description:
        args["description"] = agent.description
    if task and task.expected_output:
        args["expected_output"] = task.expected_output
    limit = task.tool_call_limit if task and task.tool_call_limit is not None else agent.tool_call_limit
    if limit is not None:
        args["tool_call_limit"] = limit
    output_format = (task.output_format if task else None) or agent.output_format
    if output_format == "markdown":
        args["markdown"] = True
    notes = [s.note for s in plan.servers if s.note]
    context = [task.additional_context] if task and task.additional_context else []
    if notes:
        context.append("Unavailable tools this run:\n" + "\n".join(f"- {n}" for n in notes))
    if context:
        args["additional_context"] = "\n\n".join(context)
    args["tools"].extend(tools or [])
    args.update(override)
    return args


# ---- the module -----------------------------------------------------------------------------------


class Backend:
    """The official SDK's Backend, for agno agents: `Agent(**Backend().get_args(task=task))`."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        self.configuration = configuration or Configuration()

    def _agent_call(
        self, agent_id: str | None, agent: Agent | None, agent_version: str | int | None, task: Task | None
    ) -> Call:
        agent_id = agent_id or (agent.id if agent else None) or (task.agent_id if task else None)
        return Agents(self.configuration)._get_call(agent_id, agent_version)

    def get_args(
        self,
        agent_id: str | None = None,
        agent: Agent | None = None,
        agent_version: str | int | None = None,
        task: Task | None = None,
        override: dict[str, Any] | None = None,
        tools: Sequence[Callable[..., Any] | Any] | None = None,
        model_api_key: str | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for `agno.agent.Agent(**args)`.

        The agent is `agent_id`, else `agent.id`, else `task.agent_id`, else XPANDER_AGENT_ID (it is
        always read from the server: the model endpoint is not part of `Agent`). MCP servers use the
        token the server holds for `task.input.user.id`. `tools` are appended to the MCP tools and
        `override` replaces any key last (`override={"model": ...}` skips building the model).
        """
        _require_agno()
        call = self._agent_call(agent_id, agent, agent_version, task)
        plan = _plan(parse(_AgentConfig, send(self.configuration, call), call), task)
        for server in plan.servers:
            if server.needs_token:
                try:
                    answer: Any = send(self.configuration, _token_call(plan, server))
                except ModuleException as exc:
                    answer = exc
                _take_token(plan, server, answer)
        for server in plan.servers:
            if _probed(server):
                _probe(server)
        return _build(plan, override, tools, model_api_key)

    async def aget_args(
        self,
        agent_id: str | None = None,
        agent: Agent | None = None,
        agent_version: str | int | None = None,
        task: Task | None = None,
        override: dict[str, Any] | None = None,
        tools: Sequence[Callable[..., Any] | Any] | None = None,
        model_api_key: str | None = None,
    ) -> dict[str, Any]:
        """get_args on the running event loop; the token lookups and MCP checks run concurrently."""
        _require_agno()
        call = self._agent_call(agent_id, agent, agent_version, task)
        plan = _plan(parse(_AgentConfig, await asend(self.configuration, call), call), task)

        async def token(server: _Server) -> None:
            try:
                answer: Any = await asend(self.configuration, _token_call(plan, server))
            except ModuleException as exc:
                answer = exc
            _take_token(plan, server, answer)

        await asyncio.gather(*(token(s) for s in plan.servers if s.needs_token))
        await asyncio.gather(*(_aprobe(s) for s in plan.servers if _probed(s)))
        return _build(plan, override, tools, model_api_key)

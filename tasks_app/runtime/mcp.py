"""MCP servers of a run: one connection per graph item, as the task's user.

Which token a server gets (the task's, else the vault's for the turn's user, else the item's own),
and telling "needs sign-in" (401/403, an auth event the user can act on) from other failures (the
task fails saying which server and why).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import httpx2

from console.models import GraphItem
from tasks_app.models import ActivityKind
from tasks_app.runtime import outbound
from tasks_app.runtime.failures import McpAuthFailed, TaskFailure, cause_of, remote_error
from tasks_app.runtime.mapping import ToolCalls, slug


class BearerAuth(httpx2.Auth):
    """Sends the user's token and turns a 401/403 into McpAuthFailed (the MCP client would hide it)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code in (401, 403):
            raise McpAuthFailed(response.status_code)


@dataclass(frozen=True)
class Credentials:
    """A run's MCP credentials, read once: the task's user tokens and the vault's, by item key."""

    task_tokens: dict[str, Any]
    stored: dict[str, str]

    def for_item(self, item: GraphItem) -> tuple[str | None, dict[str, str]]:
        """(bearer token, extra headers) for an MCP graph item: the task's token, else a stored one."""
        value = self.task_tokens.get(item.key)
        if isinstance(value, dict):
            return None, dict(value)
        if isinstance(value, str):
            return value, {}
        secret = item.secret_settings()
        headers = dict(secret.get("headers") or {})
        stored = self.stored.get(item.key)
        if stored:
            return stored, headers
        return secret.get("api_key"), headers


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every MCP connection: loading the CA bundle per run cost ~80 ms of CPU."""
    return ssl.create_default_context()


async def connect(
    items: list[GraphItem],
    credentials: Credentials,
    calls: ToolCalls,
    secrets: list[str],
    sink: Any,
    stack: contextlib.AsyncExitStack,
) -> list[Any]:
    """Connect each MCP server as the task's user; sign-in problems become auth events, not crashes.

    The tokens used are added to `secrets` (masked like the task's), each tool is mapped to its
    graph item in `calls`, and the connections close with `stack`.
    """
    from pydantic_ai.mcp import MCPToolset

    ready = []
    for item in items:
        if item.type != "mcp":
            continue
        mcp = item.mcp_settings
        url, server_name = mcp.get("url", ""), mcp.get("name") or item.name or item.key
        token, headers = credentials.for_item(item)
        secrets.extend(t for t in [token, *headers.values()] if t)  # vault tokens are masked too
        try:
            await outbound.check_url(url)
        except outbound.OutboundRefused as exc:
            raise TaskFailure(f"MCP server {server_name} ({url}): {exc}") from None
        # One guarded client per server and run: its cookies are this user's only.
        http = outbound.client(
            headers=headers or None, verify=tls_context(), timeout=httpx2.Timeout(30.0, read=300.0)
        )
        stack.push_async_callback(http.aclose)
        toolset = MCPToolset(
            url,
            id=f"mcp-{slug(item.key)}",
            auth=BearerAuth(token),
            http_client=http,
            tool_error_behavior="failed",
        )
        try:
            await stack.enter_async_context(toolset)
            tools = await toolset.list_tools()
        except Exception as exc:
            cause = cause_of(exc, McpAuthFailed)
            if cause is None:
                refused = outbound.refusal_in(exc)
                reason = str(refused) if refused else f"is unreachable ({remote_error(exc)})"
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
            calls.items[tool.name] = item.key
        ready.append(
            toolset.filtered(lambda ctx, td, allowed=allowed: not allowed or td.name in allowed)
            if allowed
            else toolset
        )
    return ready

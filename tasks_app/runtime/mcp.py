"""MCP servers of a run: one connection per graph item, as the task's user.

Which token a server gets (the task's, else the vault's for the turn's user, else the item's own),
and telling "needs sign-in" (401/403, an auth event the user can act on) from other failures (the
task fails saying which server and why).

A server's tool list is kept for a few seconds per (organization, URL, credential) (`ToolLists`):
a run that finds it there opens no session until the model calls one of the server's tools
(`LazyMCPToolset`); a run that does not connects first, as the first contact checks the credential.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
from asgiref.sync import sync_to_async
from django.conf import settings
from mcp.client.auth.utils import extract_scope_from_www_auth

from console import oauth, outbound, vault
from console.models import GraphItem
from tasks_app.models import ActivityKind
from tasks_app.runtime.failures import McpAuthFailed, TaskFailure, cause_of, remote_error
from tasks_app.runtime.mapping import ToolCalls, slug

if TYPE_CHECKING:
    from pydantic_ai.tools import ToolDefinition

log = logging.getLogger(__name__)
Renew = Callable[[str], Awaitable[str | None]]
ListingKey = tuple[str, str, str]  # (organization, server URL, keyed hash of the credential)


class BearerAuth(httpx2.Auth):
    """Sends the user's token and turns a 401/403 into McpAuthFailed (the MCP client would hide it).

    With `renew`, a 401 is answered once by a refreshed token and the request is sent again, at
    connect time as mid-run (a token that expires during a long task).
    """

    requires_request_body = True  # a request retried after a refresh is sent again whole

    def __init__(self, token: str | None, renew: Renew | None = None) -> None:
        self.token = token
        self.renew = renew

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code in (401, 403):
            raise _refused(response)

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code == 401 and self.token and self.renew is not None:
            await response.aread()
            fresh = await self.renew(self.token)
            if fresh:
                self.token = fresh
                request.headers["Authorization"] = f"Bearer {fresh}"
                response = yield request
        if response.status_code in (401, 403):
            raise _refused(response)


def _refused(response: httpx2.Response) -> McpAuthFailed:
    """A 401/403 as McpAuthFailed; a 403 insufficient_scope carries the scope it asks for (step-up)."""
    challenge = response.headers.get("WWW-Authenticate", "")
    if response.status_code == 403 and "insufficient_scope" in challenge:
        return McpAuthFailed(403, extract_scope_from_www_auth(response) or "")
    return McpAuthFailed(response.status_code)


@dataclass(frozen=True)
class Credentials:
    """A run's MCP credentials, read once: the task's user tokens and the vault's, by item key.

    `organization_id` and `owner` name whose vault they came from: a 401 on a stored token is
    refreshed once, and a person who can sign in is asked to (the task pauses).
    """

    task_tokens: dict[str, Any]
    stored: dict[str, str]
    organization_id: str = ""
    owner: vault.Owner = vault.NOBODY

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


class SignInNeeded(Exception):
    """The task's user must sign in to an MCP server before the turn can run: the task pauses."""

    def __init__(self, graph_item_key: str, event: dict[str, Any]) -> None:
        super().__init__(event["data"]["message"])
        self.graph_item_key = graph_item_key
        self.event = event


async def _renewed(credentials: Credentials, item: GraphItem, rejected: str | None) -> str | None:
    """A refreshed vault token after the server refused `rejected` (once per run), else None."""
    if not rejected or credentials.stored.get(item.key) != rejected:
        return None  # the task's own token, or none: nothing of ours to refresh
    fresh = await sync_to_async(vault.renew)(
        credentials.organization_id, credentials.owner, item.key, rejected
    )
    return fresh if fresh and fresh != rejected else None


async def _signin_event(
    credentials: Credentials, item: GraphItem, url: str, server_name: str, step_up: str | None = None
) -> dict | None:
    """The login_required event for a person who can sign in to this server, or None when nobody can.

    `step_up` (a 403 insufficient_scope) asks for a new sign-in with the larger scope, unless the
    connection already has every scope that would be asked for (no endless sign-in loop).
    """
    if not credentials.owner or isinstance(credentials.task_tokens.get(item.key), (str, dict)):
        return None
    try:
        found = await oauth.discover(url, step_up or None)
    except oauth.SignInError:
        return None
    if step_up is not None:
        granted = await sync_to_async(vault.granted_scopes)(
            credentials.organization_id, credentials.owner, item.key
        )
        if set((found.scopes or "").split()) <= set(granted.split()):
            return None
    link = await sync_to_async(oauth.signin_link)(
        credentials.organization_id,
        credentials.owner,
        item,
        step_up_scope=found.scopes if step_up is not None else None,
    )
    reason = "needs you to sign in again for more access" if step_up is not None else "needs you to sign in"
    data = {
        "message": f"{server_name} {reason}; the task waits for it",
        "server_url": url,
        "server_name": server_name,
        "url": link,  # the wire's name for the sign-in URL (xpander-wire.md 4.3)
    }
    return {"type": "login_required", "data": data}


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every MCP connection: loading the CA bundle per run cost ~80 ms of CPU."""
    return ssl.create_default_context()


def _renewer(credentials: Credentials, item: GraphItem, secrets: list[str]) -> Renew:
    """Refresh this run's vault token for an item after a 401; the new token is masked like the old."""

    async def renew(rejected: str) -> str | None:
        fresh = await _renewed(credentials, item, rejected)
        if fresh:
            secrets.append(fresh)
        return fresh

    return renew


class ToolLists:
    """Each MCP server's tool list per (organization, server URL, credential), for a few seconds.

    Listing costs a whole MCP session (connect, initialize, list, close: ~14 % of the server's CPU
    per run in the benchmark) even when the model calls no tool. A list that the same credential
    got within MCP_TOOLS_CACHE_SECONDS is reused and the session waits for a tool call. Process-local
    and bounded (least recently used out). A key holds a keyed hash of the token and headers whose
    key lives in this process only, never a credential: another user's token is another entry.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._lists: OrderedDict[ListingKey, tuple[float, tuple[ToolDefinition, ...]]] = OrderedDict()
        self._lock = threading.Lock()  # a worker thread and the event loop may share the process
        self._salt = os.urandom(32)
        self.clock: Callable[[], float] = time.monotonic

    def key(self, organization_id: str, url: str, token: str | None, headers: dict[str, str]) -> ListingKey:
        """The entry of a server as seen with one credential (a token and the extra headers)."""
        material = json.dumps([token or "", sorted(headers.items())]).encode()
        return str(organization_id), url, hmac.new(self._salt, material, hashlib.sha256).hexdigest()

    def get(self, key: ListingKey) -> tuple[ToolDefinition, ...] | None:
        """The tool definitions listed under `key` if they have not expired."""
        with self._lock:
            found = self._lists.get(key)
            if found is None:
                return None
            if found[0] <= self.clock():
                del self._lists[key]
                return None
            self._lists.move_to_end(key)
            return found[1]

    def put(self, key: ListingKey, tools: tuple[ToolDefinition, ...], seconds: float) -> None:
        """Keep `tools` under `key` for `seconds` (0 or less: keep nothing)."""
        if seconds <= 0:
            return
        with self._lock:
            self._lists[key] = (self.clock() + seconds, tools)
            self._lists.move_to_end(key)
            while len(self._lists) > self.size:
                self._lists.popitem(last=False)

    def drop(self, key: ListingKey) -> None:
        """Forget a list whose credential or server just failed: the next run checks it first."""
        with self._lock:
            self._lists.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._lists.clear()

    def __len__(self) -> int:
        return len(self._lists)


TOOL_LISTS = ToolLists()


def cache_seconds() -> float:
    """How long a tool list is reused (MCP_TOOLS_CACHE_SECONDS; 0 turns the reuse and laziness off)."""
    return max(0.0, float(getattr(settings, "MCP_TOOLS_CACHE_SECONDS", 60.0) or 0.0))


async def _open(
    item: GraphItem,
    where: tuple[str, str],
    auth: BearerAuth,
    headers: dict[str, str],
    stack: contextlib.AsyncExitStack,
    listing: bool = True,
) -> tuple[Any, list[Any]]:
    """One MCP connection and its tools (none asked for without `listing`); McpAuthFailed on
    401/403, TaskFailure when unreachable."""
    from pydantic_ai.mcp import MCPToolset

    url, server_name = where
    # One guarded client per server and run: its cookies are this user's only.
    http = outbound.client(
        headers=headers or None, verify=tls_context(), timeout=httpx2.Timeout(30.0, read=300.0)
    )
    stack.push_async_callback(http.aclose)
    toolset = MCPToolset(
        url,
        id=f"mcp-{slug(item.key)}",
        auth=auth,
        http_client=http,
        tool_error_behavior="failed",
    )
    try:
        await stack.enter_async_context(toolset)
        return toolset, (await toolset.list_tools() if listing else [])
    except Exception as exc:
        cause = cause_of(exc, McpAuthFailed)
        if cause is not None:
            raise cause from None
        refused = outbound.refusal_in(exc)
        reason = str(refused) if refused else f"is unreachable ({remote_error(exc)})"
        raise TaskFailure(f"MCP server {server_name} ({url}) {reason}") from None


def _later(
    item: GraphItem, where: tuple[str, str], auth: BearerAuth, headers: dict[str, str], key: ListingKey
) -> Callable[[contextlib.AsyncExitStack], Awaitable[Any]]:
    """Opens the session of a server whose list was reused, when the model first calls its tool.

    The list was good for this credential a moment ago; if the server now refuses it (after the
    usual refresh) or cannot be reached, the task fails saying so (as a mid-run expiry does) and the
    list is forgotten, so the next run checks the server before its first model request.
    """

    async def open_session(stack: contextlib.AsyncExitStack) -> Any:
        try:
            toolset, _ = await _open(item, where, auth, headers, stack, listing=False)
        except McpAuthFailed as refused:
            TOOL_LISTS.drop(key)
            url, server_name = where
            raise TaskFailure(
                f"MCP server {server_name} ({url}) rejected the credentials (HTTP {refused.status})"
            ) from None
        except BaseException:
            TOOL_LISTS.drop(key)
            raise
        return toolset

    return open_session


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
    graph item in `calls`, and the connections close with `stack`. A person who can sign in to a
    server they are not connected to raises SignInNeeded (the task pauses) before any model request.
    A server whose tool list this credential got a moment ago (`TOOL_LISTS`) is not connected
    until the model calls one of its tools.
    """
    from tasks_app.runtime.lazytools import LazyMCPToolset

    seconds = cache_seconds()
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
        auth = BearerAuth(token, _renewer(credentials, item, secrets))
        key = TOOL_LISTS.key(credentials.organization_id, url, token, headers)
        listed = TOOL_LISTS.get(key) if seconds else None
        toolset: Any
        if listed is not None:
            names = [tool.name for tool in listed]
            opener = _later(item, (url, server_name), auth, headers, key)
            toolset = LazyMCPToolset(f"mcp-{slug(item.key)}", opener, stack, tools=listed)
        else:
            try:
                opened, status = await _open(item, (url, server_name), auth, headers, stack), 0
                step_up = None
            except McpAuthFailed as refused:
                opened, status, step_up = None, refused.status, refused.step_up_scope
            if opened is None:
                signin = await _signin_event(credentials, item, url, server_name, step_up)
                if signin is not None:
                    raise SignInNeeded(item.key, signin)
                kind = "token_issue"  # nobody can sign in here: the task runs without this server
                message = (
                    f"{server_name} needs you to sign in, which this task cannot ask for; running without it"
                    if not token
                    else f"{server_name} rejected the token (HTTP {status}); running without it"
                )
                data = {"message": message, "server_url": url, "server_name": server_name}
                sink.event(
                    "auth_event",
                    {"type": kind, "data": data},
                    (ActivityKind.AUTH, {"type": kind, "data": data}),
                )
                continue
            toolset, tools = opened
            names = [tool.name for tool in tools]
            if seconds:  # its definitions are kept when the run first asks for them
                toolset = LazyMCPToolset(toolset.id, None, stack, opened=toolset, keep=(key, seconds))
        allowed = set(mcp.get("allowed_tools") or [])
        for name in names:
            calls.items[name] = item.key
        ready.append(
            toolset.filtered(lambda ctx, td, allowed=allowed: not allowed or td.name in allowed)
            if allowed
            else toolset
        )
    return ready

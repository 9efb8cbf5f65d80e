"""A real MCP server (mcp 2.x `MCPServer`, streamable HTTP) on a free 127.0.0.1 port that checks bearer tokens.

It runs under uvicorn in a background thread (its own event loop), so sync fixtures, async tests and
other processes can reach it::

    from tests.tools.mcp_server import AuthMCPServer

    with AuthMCPServer({"tok-alice": "alice", "tok-bob": "bob"}) as mcp:
        mcp.url                          # "http://127.0.0.1:<port>/mcp"
        toolset = MCPToolset(mcp.url, auth="tok-alice")   # pydantic_ai.mcp.MCPToolset
        ...
        mcp.calls                        # [ToolCallRecord(name="whoami", args={}, user="alice", status="completed", ...)]
        mcp.rejected                     # HTTP requests answered 401 (missing/unknown token)

Every HTTP request to the MCP endpoint needs `Authorization: Bearer <token>` with a token of the
mapping, else it gets HTTP 401 (JSON body, `WWW-Authenticate: Bearer`) before reaching MCP. The
check is a plain ASGI middleware around the SDK's streamable-HTTP Starlette app; tools find their
caller from the `Authorization` header of the HTTP request that carried the call (`ctx.headers`).

Tools:
- `whoami() -> str`: the caller's user name.
- `add(a: int, b: int) -> int`.
- `slow(seconds: float) -> str`: sleeps; its record goes "started" -> "completed" or "cancelled"
  (the client cancelled the call or closed the session).
- `fail(message: str)`: raises a tool error (the client gets an `isError` result with `message`).
- `echo(text: str) -> str`.

Records (thread-safe snapshots): `calls` (`ToolCallRecord`: name, args, user, status "started" |
"completed" | "cancelled" | "failed", result, error, started_at, finished_at from
`time.monotonic()`), `http` (`HttpRecord`: method, path, status, user, rpc: the JSON-RPC methods
of its body), `rejected` (the `HttpRecord`s answered 401), `sessions` (MCP sessions opened).
`calls_by(user)`, `wait_for(pred)` / `await wait_for_async(pred)`, `reset()`.
`add_user(token, name)`, `remove_user(token)`, `set_users(mapping)` change the mapping at runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["AuthMCPServer", "HttpRecord", "ToolCallRecord"]


@dataclass
class ToolCallRecord:
    name: str
    args: dict[str, Any]
    user: str | None
    status: str = "started"  # "started" | "completed" | "cancelled" | "failed"
    result: Any = None
    error: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None


@dataclass
class HttpRecord:
    method: str
    path: str
    user: str | None  # None: no valid token
    status: int = 0
    at: float = field(default_factory=time.monotonic)
    rpc: list[str] = field(default_factory=list)  # the JSON-RPC methods the request carried


def _bearer(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _rpc_methods(body: bytes) -> list[str]:
    """The methods of the JSON-RPC messages in a request body (one message or a batch)."""
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return []
    messages = parsed if isinstance(parsed, list) else [parsed]
    return [m["method"] for m in messages if isinstance(m, dict) and isinstance(m.get("method"), str)]


class AuthMCPServer:
    """The MCP test server. See the module docstring.

    Args:
        tokens: bearer token -> user name.
        path: the streamable-HTTP endpoint path.
        name: the MCP server name.
        json_response: answer POSTs with JSON instead of SSE streams.
        stateless: stateless streamable HTTP (no MCP session id).
        host, port: where to listen (port 0: a free one).
    """

    def __init__(
        self,
        tokens: Mapping[str, str] | None = None,
        *,
        path: str = "/mcp",
        name: str = "test-tools",
        json_response: bool = False,
        stateless: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.tokens: dict[str, str] = dict(tokens or {})
        self.path = path
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._calls: list[ToolCallRecord] = []
        self._http: list[HttpRecord] = []
        # MCPServer() calls logging.basicConfig(): keep the root logger as the caller configured it.
        root = logging.getLogger()
        saved = (root.level, list(root.handlers))
        try:
            self.mcp = MCPServer(
                name, instructions="Tools for the agent runtime's tests.", log_level="WARNING"
            )
        finally:
            root.setLevel(saved[0])
            root.handlers[:] = saved[1]
        self._register_tools()
        app = self.mcp.streamable_http_app(
            streamable_http_path=path, json_response=json_response, stateless_http=stateless, host=host
        )
        self.app = self._auth_middleware(app)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # -- users ---------------------------------------------------------------------------------
    def add_user(self, token: str, name: str) -> None:
        with self._lock:
            self.tokens[token] = name

    def set_users(self, tokens: Mapping[str, str]) -> None:
        """Replace the whole token -> user mapping."""
        with self._lock:
            self.tokens = dict(tokens)

    def remove_user(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def user_for(self, token: str | None) -> str | None:
        with self._lock:
            return None if token is None else self.tokens.get(token)

    # -- records -------------------------------------------------------------------------------
    @property
    def calls(self) -> list[ToolCallRecord]:
        with self._lock:
            return list(self._calls)

    @property
    def http(self) -> list[HttpRecord]:
        with self._lock:
            return list(self._http)

    @property
    def rejected(self) -> list[HttpRecord]:
        return [r for r in self.http if r.status == 401]

    @property
    def sessions(self) -> int:
        """MCP sessions clients opened (accepted `server/discover` or `initialize` requests)."""
        opening = {"server/discover", "initialize"}
        return sum(1 for r in self.http if r.status == 200 and opening & set(r.rpc))

    def calls_by(self, user: str | None) -> list[ToolCallRecord]:
        return [c for c in self.calls if c.user == user]

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._http.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005) -> Any:
        """Poll `predicate` until it's truthy (returns its value) or raise TimeoutError. Sync code only."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout}s")
            time.sleep(interval)
        return value

    async def wait_for_async(
        self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005
    ) -> Any:
        """Like `wait_for`, for async tests (doesn't block the event loop)."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout}s")
            await asyncio.sleep(interval)
        return value

    # -- tools ---------------------------------------------------------------------------------
    def _caller(self, ctx: Context) -> str | None:
        return self.user_for(_bearer(ctx.headers))

    def _begin(self, name: str, args: dict[str, Any], ctx: Context) -> ToolCallRecord:
        rec = ToolCallRecord(name=name, args=args, user=self._caller(ctx))
        with self._lock:
            self._calls.append(rec)
        return rec

    @staticmethod
    def _end(rec: ToolCallRecord, status: str, result: Any = None, error: str | None = None) -> None:
        rec.result, rec.error = result, error
        rec.finished_at = time.monotonic()
        rec.status = status  # last: waiters poll on it

    def _register_tools(self) -> None:
        mcp = self.mcp

        @mcp.tool()
        def whoami(ctx: Context) -> str:
            """Return the name of the user calling this tool."""
            rec = self._begin("whoami", {}, ctx)
            self._end(rec, "completed", rec.user)
            return rec.user or "anonymous"

        @mcp.tool()
        def add(a: int, b: int, ctx: Context) -> int:
            """Add two integers."""
            rec = self._begin("add", {"a": a, "b": b}, ctx)
            self._end(rec, "completed", a + b)
            return a + b

        @mcp.tool()
        def echo(text: str, ctx: Context) -> str:
            """Return the text unchanged."""
            rec = self._begin("echo", {"text": text}, ctx)
            self._end(rec, "completed", text)
            return text

        @mcp.tool()
        async def slow(seconds: float, ctx: Context) -> str:
            """Sleep for the given number of seconds, then answer."""
            rec = self._begin("slow", {"seconds": seconds}, ctx)
            try:
                await asyncio.sleep(seconds)
            except BaseException:  # cancelled by the client (notifications/cancelled or session closed)
                self._end(rec, "cancelled")
                raise
            result = f"slept {seconds}s"
            self._end(rec, "completed", result)
            return result

        @mcp.tool()
        def fail(message: str, ctx: Context) -> str:
            """Always fail with the given message."""
            rec = self._begin("fail", {"message": message}, ctx)
            self._end(rec, "failed", error=message)
            raise ToolError(message)

    # -- auth ----------------------------------------------------------------------------------
    def _auth_middleware(self, app: Any) -> Any:
        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            user = self.user_for(_bearer(headers))
            rec = HttpRecord(method=scope.get("method", ""), path=scope.get("path", ""), user=user)
            with self._lock:
                self._http.append(rec)
            if user is None:
                rec.status = 401
                body = json.dumps(
                    {"error": "invalid_token", "error_description": "missing or unknown bearer token"}
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer error="invalid_token"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return

            async def send_recording(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    rec.status = message["status"]
                await send(message)

            body = bytearray()

            async def receive_recording() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request":
                    body.extend(message.get("body", b""))
                    if not message.get("more_body"):
                        rec.rpc = _rpc_methods(bytes(body))
                return message

            await app(scope, receive_recording, send_recording)

        return asgi

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The streamable-HTTP endpoint, e.g. http://127.0.0.1:PORT/mcp."""
        return f"{self.base}{self.path}"

    def start(self) -> AuthMCPServer:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        server = uvicorn.Server(config)
        self._server = server
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as e:
                failure.append(e)

        self._thread = threading.Thread(target=run, name=f"mcp-server-{id(self):x}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if failure or not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"MCP server failed to start: {failure[0] if failure else 'thread died'}")
            if time.monotonic() > deadline:
                raise TimeoutError("MCP server did not start in 15s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is None or self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(15)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        self._thread = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def __enter__(self) -> AuthMCPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> AuthMCPServer:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

"""A real OpenAI-compatible chat-completions server that replays a script (no mocks).

It is a small HTTP/1.1 server (raw asyncio, keep-alive, chunked SSE) on a free 127.0.0.1 port, run
by its own event loop in a background thread, so sync pytest fixtures, async tests, benchmark
scripts and other processes (a daphne/celery worker started by a test) can all reach it::

    from tests.tools.scripted_model import ScriptedModel, ToolCall, Turn

    with ScriptedModel([Turn.tool("add", {"a": 1, "b": 2}), Turn.reply("The sum is 3.", chunks=4)]) as model:
        model.base_url                       # "http://127.0.0.1:<port>/v1"
        agent = Agent(model.chat_model())    # OpenAIChatModel + OpenAICompatibleProvider on base_url
        ...
        model.requests[1].tool_results       # [{"role": "tool", "tool_call_id": ..., "content": "3"}]
        model.requests[0].disconnected       # True if the client closed the connection mid-response
        assert model.errors == []            # no request found its script exhausted

Each request to `POST /v1/chat/completions` (or `/chat/completions`) takes the next `Turn` of its
script. A turn can hold reasoning (streamed first, as the `reasoning_content` delta field), text
(streamed as `chunks` pieces), tool calls (streamed as OpenAI does: `tool_calls` deltas, `id` and
name in the first delta of each call, arguments in `arg_chunks` pieces, `finish_reason
"tool_calls"`), or an error (HTTP 429/500/... with an OpenAI-style `{"error": {...}}` body). A
plain `str` stands for `Turn(text=...)`. Streaming (`"stream": true`) and non-streaming JSON
answers are both served; usage is in the last chunk when `stream_options.include_usage` is set
(pydantic-ai always sets it) and in every non-stream answer.

Scripts per conversation, so concurrent tasks don't steal each other's turns::

    model = ScriptedModel(default_script, scripts={"[conv-1]": [...], "[conv-2]": [...]})
    model.set_script([...], key="[conv-3]")  # add/replace at runtime

A request uses the script whose key is a substring of its first user message (else of any
message's text, system prompt included); the longest matching key wins; no match -> the default
script (`key=None`). Pass `key_fn=lambda body: ...` to choose the key yourself.

A script can also be a function of the request body (a dict, the JSON the client sent), returning a
turn; it's called for every request of that key, on the server's thread (keep it quick)::

    model = ScriptedModel(tool_then_reply("add", {"a": 1, "b": 2}, "done", chunks=500))

Timing: `delay_first` waits before the first byte of the answer (status line included),
`delay_chunk` before each streamed chunk after the first (and before the finish chunk). `hang=True`
keeps the stream open after the last content chunk (no finish chunk) until the client goes away (or
`hang_timeout`), for stop tests; `abort_after=N` drops the TCP connection after N content chunks (a
network failure mid-stream). A turn is taken when its request arrives, even if the client then leaves.

Errors of the script itself (no script for the key, a list script exhausted, a responder raising)
are answered HTTP 500 (`"code": "script_error"`) and listed in `model.errors`.

Note: the OpenAI SDK retries 429/5xx answers (2 retries by default) and each retry takes the next
turn; pass `model_settings={"max_retries": 0}` to the run, or script the error several times.

Records: `model.requests` (a snapshot list of `RecordedRequest`: `index`, `body`, `headers`, `key`,
`turn`, `status`, `stream`, `chunks_sent`, `completed`, `disconnected`, `aborted`, `received_at` /
`first_byte_at` / `finished_at` from `time.monotonic()`, plus `messages`, `user_text`,
`tool_results`, `tool_names`, `ttfb`, `done`), `model.errors`. Wait for them with
`model.wait_request(i, until=lambda r: ...)` / `model.wait_for(pred)` in sync code, and
`await model.wait_request_async(...)` / `await model.wait_for_async(pred)` in async tests (never
block the test's own event loop: the client under test runs on it).

Benchmarks: `ScriptedModel(..., process=True)` serves from a child process, so the server doesn't
compete for the benchmark's GIL (in a thread it does, and under load it inflates wall times); its
scripts must be picklable (turn lists, `ToolThenReply` from `tool_then_reply`, module-level
functions). `record_bodies=False` saves memory on long runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import itertools
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RecordedRequest",
    "ScriptExhausted",
    "ScriptedModel",
    "ToolCall",
    "ToolThenReply",
    "Turn",
    "first_user_text",
    "last_message",
    "message_text",
    "tool_messages",
    "tool_then_reply",
]

HANG_TIMEOUT = 300.0
_ROOT = Path(__file__).resolve().parents[2]  # the project root, so `tests.tools` imports in a child


# --------------------------------------------------------------------------------------------------
# Script format


@dataclass
class ToolCall:
    """One tool call the model makes. `args` is a dict (sent as JSON) or a raw JSON string."""

    name: str
    args: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None  # default: "call_<n>", unique per server

    def arguments_json(self) -> str:
        return self.args if isinstance(self.args, str) else json.dumps(self.args)


@dataclass
class Turn:
    """What the model answers to one request.

    Order in a stream: reasoning chunks, then text chunks, then tool calls, then the finish chunk
    (`finish_reason` "tool_calls" if there are tool calls, else "stop", unless set), then the usage
    chunk, then `data: [DONE]`.
    """

    text: str | list[str] | None = None
    chunks: int = 1  # a str `text` is split into this many pieces (a list is sent as is)
    reasoning: str | list[str] | None = None
    reasoning_chunks: int = 1
    reasoning_field: str = "reasoning_content"  # or "reasoning" (OpenRouter/Ollama style)
    tool_calls: list[ToolCall] = field(default_factory=list)
    arg_chunks: int = 2  # each tool call's JSON arguments are streamed in this many pieces
    # error: an HTTP error status instead of an answer (429, 500, 503, 400, ...)
    error_status: int | None = None
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    retry_after: float | None = None  # sent as a `retry-after` header with the error
    # timing
    delay_first: float = 0.0  # seconds before the first byte
    delay_chunk: float = 0.0  # seconds before each streamed chunk after the first
    hang: bool = False  # keep the stream open after the content until the client leaves
    hang_timeout: float = HANG_TIMEOUT
    abort_after: int | None = None  # drop the connection after this many content chunks (stream only)
    # accounting
    usage: tuple[int, int] | None = None  # (prompt_tokens, completion_tokens); default: estimated
    finish_reason: str | None = None

    # -- shorthands ----------------------------------------------------------------------------
    @classmethod
    def reply(cls, text: str | list[str], chunks: int = 1, **kw: Any) -> Turn:
        """A text answer, streamed as `chunks` pieces (or one piece per list item)."""
        return cls(text=text, chunks=chunks, **kw)

    @classmethod
    def think(cls, reasoning: str | list[str], text: str | list[str] | None = None, **kw: Any) -> Turn:
        """Reasoning (`reasoning_content` deltas) followed by text."""
        return cls(reasoning=reasoning, text=text, **kw)

    @classmethod
    def tool(
        cls, name: str, args: dict[str, Any] | str | None = None, *, id: str | None = None, **kw: Any
    ) -> Turn:
        """One tool call."""
        return cls(tool_calls=[ToolCall(name, {} if args is None else args, id)], **kw)

    @classmethod
    def tools(cls, *calls: ToolCall | tuple[str, dict[str, Any] | str], **kw: Any) -> Turn:
        """Several tool calls in one answer (parallel tool calls)."""
        return cls(tool_calls=[c if isinstance(c, ToolCall) else ToolCall(*c) for c in calls], **kw)

    @classmethod
    def error(
        cls,
        status: int = 500,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        **kw: Any,
    ) -> Turn:
        """An HTTP error with an OpenAI-style body."""
        return cls(
            error_status=status,
            error_message=message,
            error_type=type,
            error_code=code,
            retry_after=retry_after,
            **kw,
        )


TurnLike = Turn | str
Responder = Callable[[dict[str, Any]], TurnLike]
ScriptLike = Sequence[TurnLike] | Responder


class ScriptExhausted(Exception):
    pass


def _as_turn(turn: TurnLike) -> Turn:
    if isinstance(turn, Turn):
        return turn
    if isinstance(turn, str):
        return Turn(text=turn)
    raise TypeError(f"a script turn must be a Turn or a str, not {type(turn).__name__}")


def _split(value: str | list[str] | None, n: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [p for p in value if p]
    if not value:
        return []
    n = max(1, min(n, len(value)))
    size, extra = divmod(len(value), n)
    out, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(value[pos : pos + step])
        pos += step
    return out


# --------------------------------------------------------------------------------------------------
# Request helpers (also handy inside responder functions)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message, whether `content` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return ""


def first_user_text(body: Mapping[str, Any]) -> str:
    for m in body.get("messages") or []:
        if m.get("role") == "user":
            return message_text(m)
    return ""


def last_message(body: Mapping[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    return messages[-1] if messages else {}


def tool_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages") or [] if m.get("role") == "tool"]


@dataclass
class ToolThenReply:
    """A responder for benchmarks: call the tool once, then answer `text` once a tool result is in.

    A picklable dataclass (not a closure), so it also works with `ScriptedModel(..., process=True)`.
    """

    name: str
    args: dict[str, Any] | str | None = None
    text: str = "Done."
    chunks: int = 1
    delay_chunk: float = 0.0
    delay_first: float = 0.0

    def __call__(self, body: dict[str, Any]) -> Turn:
        timing = {"delay_chunk": self.delay_chunk, "delay_first": self.delay_first}
        if last_message(body).get("role") == "tool":
            return Turn(text=self.text, chunks=self.chunks, **timing)
        return Turn(tool_calls=[ToolCall(self.name, {} if self.args is None else self.args)], **timing)


def tool_then_reply(
    name: str,
    args: dict[str, Any] | str | None = None,
    text: str = "Done.",
    *,
    chunks: int = 1,
    delay_chunk: float = 0.0,
    delay_first: float = 0.0,
) -> ToolThenReply:
    """`ToolThenReply(...)`: call `name` once, then answer `text` (in `chunks` pieces)."""
    return ToolThenReply(name, args, text, chunks, delay_chunk, delay_first)


# --------------------------------------------------------------------------------------------------
# Records


@dataclass
class RecordedRequest:
    index: int
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the parsed JSON (None if it wasn't JSON)
    received_at: float  # time.monotonic()
    key: str | None = None  # the script key used (None: the default script)
    turn: Turn | None = None
    stream: bool = False
    status: int = 0  # HTTP status answered (0: nothing sent yet)
    chunks_sent: int = 0  # content chunks (reasoning/text/tool-call deltas) written
    completed: bool = False  # the whole answer was written
    disconnected: bool = False  # the client closed the connection before the answer was complete
    aborted: bool = False  # we dropped the connection on purpose (`abort_after`)
    first_byte_at: float | None = None
    finished_at: float | None = None  # completed, disconnected or aborted
    error: str | None = None  # script problem for this request (it was answered 500)

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages") or [])

    @property
    def user_text(self) -> str:
        return first_user_text(self.body or {})

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The `role: "tool"` messages (each has `tool_call_id` and `content`)."""
        return tool_messages(self.body or {})

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools offered to the model in this request."""
        return [t.get("function", {}).get("name") for t in (self.body or {}).get("tools") or []]

    @property
    def ttfb(self) -> float | None:
        return None if self.first_byte_at is None else self.first_byte_at - self.received_at


# --------------------------------------------------------------------------------------------------
# The server


class _Script:
    def __init__(self, script: ScriptLike) -> None:
        self.fn: Responder | None = None
        self.turns: deque[TurnLike] = deque()
        if callable(script):
            self.fn = script
        else:
            self.turns.extend(script)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


class _Disconnected(Exception):
    pass


class _Conn:
    """A buffered connection that notices the peer closing while we write a response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self._watch: asyncio.Future[bytes] | None = None

    async def _read(self) -> bytes:
        if self._watch is not None:
            task, self._watch = self._watch, None
            return await task
        return await self.reader.read(65536)

    async def read_until(self, sep: bytes, limit: int = 1 << 20) -> bytes | None:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("header too large")
            data = await self._read()
            if not data:
                return None
            self.buf += data

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self._read()
            if not data:
                raise asyncio.IncompleteReadError(bytes(self.buf), n)
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def watch(self) -> asyncio.Future[bytes]:
        if self._watch is None:
            self._watch = asyncio.ensure_future(self.reader.read(65536))
        return self._watch

    def peer_closed(self) -> bool:
        if self.writer.transport.is_closing():
            return True
        task = self._watch
        if task is None or not task.done() or task.cancelled():
            return False
        return task.exception() is not None or task.result() == b""

    async def sleep(self, seconds: float) -> None:
        """Sleep, raising `_Disconnected` as soon as the peer closes the connection."""
        task = self.watch()
        if seconds > 0:
            if task.done():  # the peer sent data early: nothing left to watch for
                await asyncio.sleep(seconds)
            else:
                await asyncio.wait({task}, timeout=seconds)
        if self.peer_closed():
            raise _Disconnected

    async def send(self, data: bytes) -> None:
        if self.peer_closed():
            raise _Disconnected
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as e:
            raise _Disconnected from e

    def close(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
        self.writer.close()


class ScriptedModel:
    """The scripted OpenAI-compatible server. See the module docstring.

    Args:
        script: the default script: a list of turns (`Turn` or `str`) or a function of the request body.
        scripts: scripts per conversation key (see `key_fn`).
        key_fn: picks the key of a request from its body; default: the longest registered key found
            in the first user message, else in any message.
        model_name: the `model` reported in answers (default: the one requested).
        host, port: where to listen (port 0: a free one).
        record_bodies: keep request bodies in `requests` (turn off for long benchmarks to save memory).
        process: serve from a child Python process instead of a thread of this one (for benchmarks:
            a server thread competes for this process's GIL and distorts its timings). Scripts,
            turns, responders and `key_fn` must then be picklable (lists of turns, `ToolThenReply`,
            module-level functions of an importable module); `requests` and `errors` are fetched
            from the child on each access (snapshots).
    """

    record_class: type[RecordedRequest] = RecordedRequest  # what each request is recorded as

    def __init__(
        self,
        script: ScriptLike | None = None,
        *,
        scripts: Mapping[str, ScriptLike] | None = None,
        key_fn: Callable[[dict[str, Any]], str | None] | None = None,
        model_name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_bodies: bool = True,
        process: bool = False,
    ) -> None:
        self.process = process
        self._proc: subprocess.Popen[bytes] | None = None
        self.host = host
        self.port = port
        self.model_name = model_name
        self.key_fn = key_fn
        self.record_bodies = record_bodies
        self._lock = threading.Lock()
        self._scripts: dict[str | None, _Script] = {}
        if script is not None:
            self._scripts[None] = _Script(script)
        for k, s in (scripts or {}).items():
            self._scripts[k] = _Script(s)
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends with /v1)."""
        return f"{self.url}/v1"

    def start(self) -> ScriptedModel:
        if self.process:
            return self._start_process()
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._on_connection, self.host, self.port, backlog=4096)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"scripted-model-{id(self):x}", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._stop_process()
            return
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def _start_process(self) -> ScriptedModel:
        if self._proc is not None:
            return self
        init = {
            "key_fn": self.key_fn,
            "model_name": self.model_name,
            "host": self.host,
            "port": self.port,
            "record_bodies": self.record_bodies,
        }
        try:
            with self._lock:
                config = pickle.dumps((init, self._scripts))
        except Exception as e:
            raise TypeError(
                "ScriptedModel(process=True) needs picklable scripts and key_fn "
                "(lists of turns, ToolThenReply, module-level functions of an importable module)"
            ) from e
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT), *(p for p in sys.path if p)])
        proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.tools.scripted_model import _child_main; _child_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=_ROOT,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(base64.b64encode(config) + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the scripted model process failed to start (said {line!r})")
        self.port = int(line.split()[1])
        self._proc = proc
        return self

    def _stop_process(self) -> None:
        if self._proc is None:
            return
        # Keep the final records, so `requests` and `errors` still answer after stop().
        with contextlib.suppress(Exception):
            requests, errors = self._call("requests"), self._call("errors")
            with self._lock:
                self._requests[:], self._errors[:] = requests, errors
        proc, self._proc = self._proc, None
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # the child stops when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _call(self, op: str, *args: Any) -> Any:
        """Run a control operation in the child process."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("POST", f"/_control/{op}", body=pickle.dumps(args))
            payload = conn.getresponse().read()
        finally:
            conn.close()
        ok, value = pickle.loads(payload)
        if not ok:
            raise RuntimeError(f"scripted model process, {op}: {value}")
        return value

    def _control(self, op: str, raw: bytes) -> bytes:
        """Serve a control operation sent by `_call` (we are the child)."""
        ops: dict[str, Callable[..., Any]] = {
            "set_script": self.set_script,
            "add_turns": lambda key, turns: self.add_turns(*turns, key=key),
            "remaining": self.remaining,
            "reset": self.reset,
            "requests": lambda: self.requests,
            "errors": lambda: self.errors,
        }
        try:
            result: tuple[bool, Any] = (True, ops[op](*pickle.loads(raw)))
        except Exception as e:
            result = (False, f"{type(e).__name__}: {e}")
        return pickle.dumps(result)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(self._conns, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ScriptedModel:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- scripting -----------------------------------------------------------------------------
    def set_script(self, script: ScriptLike, key: str | None = None) -> None:
        """Set (replace) the script of `key` (None: the default script)."""
        if self._proc is not None:
            return self._call("set_script", script, key)
        with self._lock:
            self._scripts[key] = _Script(script)

    def add_turns(self, *turns: TurnLike, key: str | None = None) -> None:
        """Append turns to the list script of `key` (created if missing)."""
        if self._proc is not None:
            return self._call("add_turns", key, turns)
        with self._lock:
            script = self._scripts.setdefault(key, _Script([]))
            if script.fn is not None:
                raise ValueError(f"the script of {key!r} is a function")
            script.turns.extend(turns)

    def remaining(self, key: str | None = None) -> int:
        """How many turns of the list script of `key` are still unplayed."""
        if self._proc is not None:
            return self._call("remaining", key)
        with self._lock:
            script = self._scripts.get(key)
            return 0 if script is None else len(script.turns)

    def reset(self) -> None:
        """Forget all scripts, requests and errors."""
        if self._proc is not None:
            return self._call("reset")
        with self._lock:
            self._scripts.clear()
            self._requests.clear()
            self._errors.clear()

    def key_for(self, body: dict[str, Any]) -> str | None:
        if self.key_fn is not None:
            return self.key_fn(body)
        keys = [k for k in self._scripts if k is not None]
        if not keys:
            return None
        first = first_user_text(body)
        matches = [k for k in keys if k in first]
        if not matches:
            everything = "\n".join(message_text(m) for m in body.get("messages") or [])
            matches = [k for k in keys if k in everything]
        return max(matches, key=len) if matches else None

    def _next_turn(self, key: str | None, body: dict[str, Any]) -> Turn:
        with self._lock:
            script = self._scripts.get(key)
            if script is None and key is not None:
                script = self._scripts.get(None)
            if script is None:
                raise ScriptExhausted(f"no script for key {key!r} and no default script")
            fn = script.fn
            if fn is None:
                if not script.turns:
                    raise ScriptExhausted(f"the script of key {key!r} is exhausted")
                return _as_turn(script.turns.popleft())
        return _as_turn(fn(body))

    # -- records -------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far, in arrival order (a snapshot)."""
        if self._proc is not None:
            return self._call("requests")
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """Script problems (a request found no script or an exhausted one; a responder raised)."""
        if self._proc is not None:
            return self._call("errors")
        with self._lock:
            return list(self._errors)

    def requests_for(self, key: str | None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.key == key]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005) -> Any:
        """Poll `predicate` until it's truthy (returns its value) or raise TimeoutError. Sync code only."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout}s")
            time.sleep(interval)

    async def wait_for_async(
        self, predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.005
    ) -> Any:
        """Like `wait_for`, for async tests (doesn't block the event loop)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout}s")
            await asyncio.sleep(interval)

    def _request_if(
        self, index: int, until: Callable[[RecordedRequest], Any] | None
    ) -> RecordedRequest | None:
        reqs = self.requests
        if len(reqs) > index and (until or _is_done)(reqs[index]):
            return reqs[index]
        return None

    def wait_request(
        self, index: int, until: Callable[[RecordedRequest], Any] | None = None, timeout: float = 10.0
    ) -> RecordedRequest:
        """Wait until request number `index` exists and `until(request)` holds (default: it's done)."""
        return self.wait_for(lambda: self._request_if(index, until), timeout)

    async def wait_request_async(
        self, index: int, until: Callable[[RecordedRequest], Any] | None = None, timeout: float = 10.0
    ) -> RecordedRequest:
        """`wait_request` for async tests."""
        return await self.wait_for_async(lambda: self._request_if(index, until), timeout)

    # -- pydantic-ai convenience -----------------------------------------------------------------
    def chat_model(self, name: str = "scripted-model", provider_name: str = "scripted") -> Any:
        """A pydantic-ai `OpenAIChatModel` on this server (via `OpenAICompatibleProvider`)."""
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

        provider = OpenAICompatibleProvider(provider_name, base_url=self.base_url, api_key="x")
        return OpenAIChatModel(name, provider=provider)

    # -- HTTP ----------------------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        conn = _Conn(reader, writer)
        try:
            while True:
                head = await conn.read_until(b"\r\n\r\n")
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await self._read_chunked(conn)
                else:
                    body = await conn.read_exactly(int(headers.get("content-length") or 0))
                keep_alive = await self._dispatch(conn, method, target.split("?", 1)[0], headers, body)
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    return
        except (_Disconnected, ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        except asyncio.CancelledError:
            return
        finally:
            conn.close()
            self._conns.discard(task)

    async def _read_chunked(self, conn: _Conn) -> bytes:
        out = bytearray()
        while True:
            size_line = await conn.read_until(b"\r\n")
            if size_line is None:
                raise asyncio.IncompleteReadError(bytes(out), None)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while await conn.read_until(b"\r\n"):  # trailers up to the empty line
                    pass
                return bytes(out)
            out += await conn.read_exactly(size)
            await conn.read_exactly(2)

    @staticmethod
    def _head(status: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_json(
        self, conn: _Conn, status: int, payload: Any, extra: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        headers = {"content-type": "application/json", "content-length": str(len(data)), **(extra or {})}
        await conn.send(self._head(status, headers) + data)

    async def _dispatch(
        self, conn: _Conn, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> bool:
        if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
            return await self._chat(conn, path, headers, raw)
        if method == "GET" and path.rstrip("/").endswith("/models"):
            name = self.model_name or "scripted-model"
            await self._send_json(conn, 200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            return True
        if method == "POST" and path.startswith("/_control/"):
            data = self._control(path.removeprefix("/_control/"), raw)
            headers = {"content-type": "application/octet-stream", "content-length": str(len(data))}
            await conn.send(self._head(200, headers) + data)
            return True
        if method == "GET" and path == "/health":
            await self._send_json(conn, 200, {"ok": True})
            return True
        await self._send_json(
            conn, 404, _error_body(f"no route for {method} {path}", "not_found_error", None)
        )
        return True

    async def _chat(self, conn: _Conn, path: str, headers: dict[str, str], raw: bytes) -> bool:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        rec = self.record_class(
            index=0,
            method="POST",
            path=path,
            headers=headers,
            body=body if self.record_bodies else None,
            received_at=time.monotonic(),
        )
        with self._lock:
            rec.index = len(self._requests)
            self._requests.append(rec)
        try:
            return await self._answer(conn, rec, body)
        except _Disconnected:
            rec.disconnected = True
            rec.finished_at = time.monotonic()
            raise
        finally:
            if rec.finished_at is None:  # cancelled (server shutdown) or a bug
                rec.finished_at = time.monotonic()

    async def _answer(self, conn: _Conn, rec: RecordedRequest, body: Any) -> bool:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            rec.status = 400
            await self._send_json(
                conn, 400, _error_body("the body must be a JSON object with messages", None, None)
            )
            rec.completed, rec.finished_at = True, time.monotonic()
            return True
        rec.stream = bool(body.get("stream"))
        try:
            rec.key = self.key_for(body)
            turn = self._next_turn(rec.key, body)
        except Exception as e:
            message = f"scripted model, request {rec.index}: {type(e).__name__}: {e}"
            rec.error = message
            with self._lock:
                self._errors.append(message)
            rec.status = 500
            await self._send_json(conn, 500, _error_body(message, "server_error", "script_error"))
            rec.completed, rec.finished_at = True, time.monotonic()
            return True
        rec.turn = turn

        if turn.delay_first > 0:
            await conn.sleep(turn.delay_first)
        model = self.model_name or body.get("model") or "scripted-model"
        completion_id = f"chatcmpl-{rec.index}"

        if turn.error_status is not None:
            rec.status = turn.error_status
            message = turn.error_message or f"scripted error {turn.error_status}"
            etype = turn.error_type or _ERROR_TYPES.get(turn.error_status, "server_error")
            extra = {"retry-after": f"{turn.retry_after:g}"} if turn.retry_after is not None else None
            rec.first_byte_at = time.monotonic()
            await self._send_json(
                conn, turn.error_status, _error_body(message, etype, turn.error_code), extra
            )
            rec.completed, rec.finished_at = True, time.monotonic()
            return True

        reasoning = _split(turn.reasoning, turn.reasoning_chunks)
        texts = _split(turn.text, turn.chunks)
        calls = [
            (c, c.id or f"call_{next(self._ids)}", _split(c.arguments_json(), turn.arg_chunks))
            for c in turn.tool_calls
        ]
        finish = turn.finish_reason or ("tool_calls" if calls else "stop")
        n_chunks = len(reasoning) + len(texts) + sum(max(1, len(pieces)) for _, _, pieces in calls)
        prompt_tokens, completion_tokens = turn.usage or (
            max(1, len(json.dumps(body.get("messages"))) // 4),
            max(1, n_chunks),
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        created = int(time.time())

        if not rec.stream:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
            if reasoning:
                message[turn.reasoning_field] = "".join(reasoning)
            if calls:
                message["tool_calls"] = [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json()},
                    }
                    for c, cid, _ in calls
                ]
            payload = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage,
            }
            rec.status = 200
            rec.first_byte_at = time.monotonic()
            await self._send_json(conn, 200, payload)
            rec.chunks_sent = n_chunks
            rec.completed, rec.finished_at = True, time.monotonic()
            return True

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            data = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        def delta_event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return event([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

        def deltas() -> Iterator[dict[str, Any]]:
            for piece in reasoning:
                yield {turn.reasoning_field: piece}
            for piece in texts:
                yield {"content": piece}
            for i, (c, cid, pieces) in enumerate(calls):
                first = pieces[0] if pieces else ""
                yield {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": cid,
                            "type": "function",
                            "function": {"name": c.name, "arguments": first},
                        }
                    ]
                }
                for piece in pieces[1:]:
                    yield {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}

        rec.status = 200
        head = self._head(
            200,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "transfer-encoding": "chunked",
                "x-request-id": f"req_{rec.index}",
            },
        )
        pending = head
        rec.first_byte_at = time.monotonic()
        for n, delta in enumerate(deltas()):
            if n == 0:
                delta = {"role": "assistant", **delta}
            elif turn.delay_chunk > 0:
                await conn.sleep(turn.delay_chunk)
            await conn.send(pending + delta_event(delta))
            pending = b""
            rec.chunks_sent += 1
            if turn.abort_after is not None and rec.chunks_sent >= turn.abort_after:
                rec.aborted, rec.finished_at = True, time.monotonic()
                conn.writer.transport.abort()
                return False
        if pending:  # an empty answer: still a valid stream
            await conn.send(pending + delta_event({"role": "assistant", "content": ""}))
        if turn.hang:
            await conn.sleep(turn.hang_timeout)
        if turn.delay_chunk > 0:
            await conn.sleep(turn.delay_chunk)
        tail = delta_event({}, finish)
        if include_usage:
            tail += event([], usage=usage)
        data = b"data: [DONE]\n\n"
        tail += f"{len(data):x}\r\n".encode() + data + b"\r\n" + b"0\r\n\r\n"
        await conn.send(tail)
        rec.completed, rec.finished_at = True, time.monotonic()
        return True


def _is_done(request: RecordedRequest) -> bool:
    return request.done


def _error_body(message: str, etype: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def _child_main() -> None:
    """Entry point of the `process=True` child: serve until stdin closes."""
    init, scripts = pickle.loads(base64.b64decode(sys.stdin.buffer.readline()))
    model = ScriptedModel(**init)
    model._scripts = scripts
    model.start()
    sys.stdout.write(f"PORT {model.port}\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # returns when the parent closes our stdin (or dies)
    model.stop()

"""A real Anthropic Messages API server that replays a script (no mocks).

The Anthropic sibling of `tests.tools.scripted_model`: the same raw-asyncio HTTP/1.1 server (it
subclasses `ScriptedModel`, so scripts per conversation, responders, timing, records and the
`wait_*` helpers all work the same), answering `POST /v1/messages` the way api.anthropic.com does::

    from tests.tools.scripted_anthropic import ScriptedAnthropic, ToolCall, Turn

    with ScriptedAnthropic([Turn.think("Who asks?", tool_calls=[ToolCall("whoami")]),
                            Turn.reply("You are alice.", chunks=8)]) as model:
        model.base_url                 # "http://127.0.0.1:<port>" (no /v1: the SDK adds /v1/messages)
        agent = Agent(model.anthropic_model())  # AnthropicModel on an AsyncAnthropic for base_url
        ...
        model.requests[0].api_key      # the key the SDK sent (x-api-key or Authorization: Bearer)
        model.requests[1].tool_results # [{"type": "tool_result", "tool_use_id": "toolu_1", "content": ...}]
        assert model.errors == []

A turn (`Turn`, the `scripted_model` one plus `error_in_stream`) becomes, in this order, content
blocks: `reasoning` -> a `thinking` block (streamed as `reasoning_chunks` `thinking_delta`s, then
one `signature_delta`), `text` -> a `text` block (`chunks` `text_delta`s), each of `tool_calls` ->
a `tool_use` block (`id` default "toolu_<n>", its JSON input streamed as an empty
`input_json_delta` then `arg_chunks` pieces). The stream is Anthropic's, event for event, each as
`event: <type>` + `data: <json>`: `message_start` (usage with `input_tokens`), per block
`content_block_start` / `content_block_delta`s / `content_block_stop` (a `ping` after the first
start), `message_delta` (`stop_reason` "tool_use" if there are tool calls, else "end_turn", unless
the turn's `finish_reason` says otherwise; cumulative `usage.output_tokens`), `message_stop`. Without
`"stream": true` the same blocks come back as one `message` JSON object (a raw-string tool input must
then be a JSON object). `usage=(input_tokens, output_tokens)` sets the counts, else they are
estimated (input: body size / 4, output: the number of content deltas).

Errors: `Turn.error(429)` answers HTTP 429 with Anthropic's body
`{"type": "error", "error": {"type": "rate_limit_error", "message": ...}, "request_id": ...}` (the
error type follows the status: 400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500 api_error,
504 timeout_error, 529 overloaded_error; `type=` overrides) and a `retry-after` header if
`retry_after` is set. `Turn.error(529, error_in_stream=True)` instead answers 200 and sends the
error as an SSE `error` event after `message_start` and the turn's content (how Anthropic reports
an overload mid-stream; the SDK does not retry those). The SDK retries 408/409/429/5xx answers
(`max_retries`, 2 by default) and each retry takes the next turn, so script an error once per try.
Requests that break the API's rules (no `model`, `max_tokens` or `messages`) get a 400 without
taking a turn; script problems (no script, exhausted) a 500 `api_error`, listed in `model.errors`
(the SDK retries those too).

Records: `model.requests` are `AnthropicRequest`s: everything `RecordedRequest` has (`body`,
`headers`, `turn`, `stream`, `chunks_sent`, `disconnected`, timings, ...) plus `api_key` (the
`x-api-key` header, or the `Authorization: Bearer` token that anthropic 2.x sends instead),
`anthropic_version`, `system` (the system prompt's text), `messages`, `user_text` (first user
message), `tool_results` (the `tool_result` blocks sent back), `tool_uses` and `thinking` (the
assistant's `tool_use` / `thinking` blocks sent back in the history), `tool_names` (offered tools),
`signatures` / `tool_use_ids` (the thinking signatures and tool_use ids this answer carried).
Script keys match the first user message, else any message's text or the system prompt (as in
`ScriptedModel`).

`POST /v1/messages/count_tokens` answers an estimate (no turn taken, not recorded). Only thread mode:
`process=True` is not supported.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.tools.scripted_model import (
    RecordedRequest,
    ScriptedModel,
    ToolCall,
    _Conn,
    _split,
    message_text,
)
from tests.tools.scripted_model import Turn as _BaseTurn

__all__ = [
    "ERROR_TYPES",
    "AnthropicRequest",
    "ScriptedAnthropic",
    "ToolCall",
    "Turn",
    "blocks_of",
    "system_text",
]

# https://docs.anthropic.com/en/api/errors
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


@dataclass
class Turn(_BaseTurn):
    """`scripted_model.Turn` (same fields and shorthands), plus `error_in_stream`.

    `reasoning` is the thinking block, `finish_reason` overrides the `stop_reason`, `usage` is
    `(input_tokens, output_tokens)`; `reasoning_field` and `error_code` are not used here.
    """

    error_in_stream: bool = False  # send the error as an SSE `error` event of a 200 stream


# --------------------------------------------------------------------------------------------------
# Request helpers


def blocks_of(content: Any, kind: str | None = None) -> list[dict[str, Any]]:
    """The content blocks of a message's `content` (a string is one text block), of type `kind`."""
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        blocks = []
    return [b for b in blocks if isinstance(b, dict) and (kind is None or b.get("type") == kind)]


def system_text(body: Mapping[str, Any]) -> str:
    """The system prompt's text (`system` is a string or a list of text blocks)."""
    return "".join(b.get("text", "") for b in blocks_of(body.get("system"), "text"))


def _message_blocks(body: Mapping[str, Any], role: str, kind: str) -> list[dict[str, Any]]:
    return [
        b
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") == role
        for b in blocks_of(m.get("content"), kind)
    ]


@dataclass
class AnthropicRequest(RecordedRequest):
    signatures: list[str] = field(default_factory=list)  # thinking signatures sent in the answer
    tool_use_ids: list[str] = field(default_factory=list)  # ids of the tool_use blocks sent in the answer

    @property
    def api_key(self) -> str | None:
        """The key the client sent: `x-api-key`, else the token of `authorization: Bearer <key>`.

        (anthropic 2.x sends `api_key` as `Authorization: Bearer`; older SDKs as `x-api-key`.)
        """
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def anthropic_version(self) -> str | None:
        return self.headers.get("anthropic-version")

    @property
    def system(self) -> str:
        return system_text(self.body or {})

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The `tool_result` blocks of the user messages (`tool_use_id`, `content`, `is_error`)."""
        return _message_blocks(self.body or {}, "user", "tool_result")

    @property
    def tool_uses(self) -> list[dict[str, Any]]:
        """The assistant's `tool_use` blocks sent back in the history."""
        return _message_blocks(self.body or {}, "assistant", "tool_use")

    @property
    def thinking(self) -> list[dict[str, Any]]:
        """The assistant's `thinking` blocks sent back in the history (`thinking`, `signature`)."""
        return _message_blocks(self.body or {}, "assistant", "thinking")

    @property
    def tool_names(self) -> list[str]:
        return [t.get("name") for t in (self.body or {}).get("tools") or [] if isinstance(t, dict)]


# --------------------------------------------------------------------------------------------------
# The server


def _error_body(message: str, etype: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}


def _sse(kind: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event as one HTTP chunk: `event: <kind>` and `data: <json>`."""
    data = f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _tool_input(call: ToolCall) -> dict[str, Any]:
    if isinstance(call.args, dict):
        return call.args
    value = json.loads(call.args or "{}")
    if not isinstance(value, dict):
        raise ValueError(f"the input of tool call {call.name!r} must be a JSON object")
    return value


class ScriptedAnthropic(ScriptedModel):
    """The scripted Anthropic Messages API server. See the module docstring.

    Same arguments as `ScriptedModel` (`process=True` excepted); `model_name` is the `model`
    reported in answers (default: the one requested).
    """

    record_class = AnthropicRequest

    def __init__(self, *args: Any, process: bool = False, **kwargs: Any) -> None:
        if process:
            raise ValueError("ScriptedAnthropic runs in a thread only (process=True is not supported)")
        super().__init__(*args, **kwargs)

    @property
    def base_url(self) -> str:
        """The Anthropic base URL: the SDK appends `/v1/messages` itself."""
        return self.url

    @property
    def requests(self) -> list[AnthropicRequest]:  # type: ignore[override]
        return super().requests  # type: ignore[return-value]

    # -- pydantic-ai / SDK convenience ---------------------------------------------------------
    def client(self, api_key: str = "sk-ant-test", **kwargs: Any) -> Any:
        """An `AsyncAnthropic` on this server (`max_retries=0` unless given)."""
        from anthropic import AsyncAnthropic

        kwargs.setdefault("max_retries", 0)
        return AsyncAnthropic(api_key=api_key, base_url=self.base_url, **kwargs)

    def anthropic_model(self, name: str = "claude-test", api_key: str = "sk-ant-test", **kwargs: Any) -> Any:
        """A pydantic-ai `AnthropicModel` on this server (see `client` for `kwargs`)."""
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        client = self.client(api_key, **kwargs)
        return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=client))

    def chat_model(self, name: str = "claude-test", provider_name: str = "anthropic") -> Any:
        """`anthropic_model(name)`, so code written for `ScriptedModel` works unchanged."""
        return self.anthropic_model(name)

    # -- scripting -----------------------------------------------------------------------------
    def key_for(self, body: dict[str, Any]) -> str | None:
        if self.key_fn is not None:
            return self.key_fn(body)
        keys = [k for k in self._scripts if k is not None]
        if not keys:
            return None
        user = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        first = message_text(user[0]) if user else ""
        matches = [k for k in keys if k in first]
        if not matches:
            texts = [message_text(m) for m in body.get("messages") or [] if isinstance(m, dict)]
            everything = "\n".join([system_text(body), *texts])
            matches = [k for k in keys if k in everything]
        return max(matches, key=len) if matches else None

    # -- HTTP ----------------------------------------------------------------------------------
    async def _send_error(self, conn: _Conn, status: int, message: str, etype: str, request_id: str) -> None:
        await self._send_json(
            conn, status, _error_body(message, etype, request_id), {"request-id": request_id}
        )

    @staticmethod
    def _head(status: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _dispatch(
        self, conn: _Conn, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> bool:
        route = path.rstrip("/")
        if method == "POST" and route.endswith("/messages/count_tokens"):
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            tokens = max(1, len(json.dumps(body)) // 4)
            await self._send_json(conn, 200, {"input_tokens": tokens})
            return True
        if method == "POST" and route.endswith("/messages"):
            return await self._chat(conn, path, headers, raw)
        if method == "GET" and path == "/health":
            await self._send_json(conn, 200, {"ok": True})
            return True
        await self._send_error(conn, 404, f"no route for {method} {path}", "not_found_error", "req_404")
        return True

    async def _answer(self, conn: _Conn, rec: RecordedRequest, body: Any) -> bool:
        assert isinstance(rec, AnthropicRequest)
        request_id = f"req_scripted_{rec.index}"
        problem = None
        if not isinstance(body, dict):
            problem = "the body must be a JSON object"
        elif not isinstance(body.get("model"), str):
            problem = "model: Field required"
        elif not isinstance(body.get("max_tokens"), int):
            problem = "max_tokens: Field required"
        elif not isinstance(body.get("messages"), list):
            problem = "messages: Field required"
        if problem is not None:
            rec.status = 400
            await self._send_error(conn, 400, problem, "invalid_request_error", request_id)
            rec.completed, rec.finished_at = True, time.monotonic()
            return True
        assert isinstance(body, dict)
        rec.stream = bool(body.get("stream"))
        try:
            rec.key = self.key_for(body)
            turn = self._next_turn(rec.key, body)
            inputs = [{} if rec.stream else _tool_input(c) for c in turn.tool_calls]
        except Exception as e:
            message = f"scripted anthropic, request {rec.index}: {type(e).__name__}: {e}"
            rec.error = message
            with self._lock:
                self._errors.append(message)
            rec.status = 500
            await self._send_error(conn, 500, message, "api_error", request_id)
            rec.completed, rec.finished_at = True, time.monotonic()
            return True
        rec.turn = turn

        if turn.delay_first > 0:
            await conn.sleep(turn.delay_first)
        model = self.model_name or body["model"]
        in_stream = bool(getattr(turn, "error_in_stream", False))

        if turn.error_status is not None and not (in_stream and rec.stream):
            rec.status = turn.error_status
            message = turn.error_message or f"scripted error {turn.error_status}"
            etype = turn.error_type or ERROR_TYPES.get(turn.error_status, "api_error")
            extra = {"request-id": request_id}
            if turn.retry_after is not None:
                extra["retry-after"] = f"{turn.retry_after:g}"
            rec.first_byte_at = time.monotonic()
            await self._send_json(conn, turn.error_status, _error_body(message, etype, request_id), extra)
            rec.completed, rec.finished_at = True, time.monotonic()
            return True

        # (the block as `content_block_start` opens it, its deltas, the block of the non-stream answer)
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]] = []
        thoughts = _split(turn.reasoning, turn.reasoning_chunks)
        if thoughts:
            signature = base64.b64encode(f"scripted-signature:{rec.index}:{len(blocks)}".encode()).decode()
            rec.signatures.append(signature)
            blocks.append(
                (
                    {"type": "thinking", "thinking": "", "signature": ""},
                    [{"type": "thinking_delta", "thinking": t} for t in thoughts]
                    + [{"type": "signature_delta", "signature": signature}],
                    {"type": "thinking", "thinking": "".join(thoughts), "signature": signature},
                )
            )
        texts = _split(turn.text, turn.chunks)
        if texts:
            blocks.append(
                (
                    {"type": "text", "text": ""},
                    [{"type": "text_delta", "text": t} for t in texts],
                    {"type": "text", "text": "".join(texts)},
                )
            )
        for call, tool_input in zip(turn.tool_calls, inputs, strict=True):
            call_id = call.id or f"toolu_{next(self._ids)}"
            rec.tool_use_ids.append(call_id)
            pieces = _split(call.arguments_json(), turn.arg_chunks)
            start = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            blocks.append(
                (
                    start,
                    [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]],
                    {**start, "input": tool_input},
                )
            )
        stop_reason = turn.finish_reason or ("tool_use" if turn.tool_calls else "end_turn")
        n_chunks = sum(sum(1 for d in deltas if d["type"] != "signature_delta") for _, deltas, _ in blocks)
        input_tokens, output_tokens = turn.usage or (
            max(1, len(json.dumps([body.get("system"), body.get("messages")])) // 4),
            max(1, n_chunks),
        )
        usage = {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }
        message_id = f"msg_scripted_{rec.index}"

        if not rec.stream:
            payload = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [final for _, _, final in blocks],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
            rec.status = 200
            rec.first_byte_at = time.monotonic()
            await self._send_json(conn, 200, payload, {"request-id": request_id})
            rec.chunks_sent = n_chunks
            rec.completed, rec.finished_at = True, time.monotonic()
            return True

        def events() -> Iterator[tuple[bool, bytes]]:
            """(is a content delta, the encoded event) for each event after `message_start`."""
            for index, (start, deltas, _) in enumerate(blocks):
                yield False, _sse("content_block_start", {"index": index, "content_block": start})
                if index == 0:
                    yield False, _sse("ping", {})
                for delta in deltas:
                    content = delta["type"] != "signature_delta"
                    yield content, _sse("content_block_delta", {"index": index, "delta": delta})
                yield False, _sse("content_block_stop", {"index": index})

        rec.status = 200
        head = self._head(
            200,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "transfer-encoding": "chunked",
                "request-id": request_id,
            },
        )
        start_message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        pending = head + _sse("message_start", {"message": start_message})
        rec.first_byte_at = time.monotonic()
        for is_content, data in events():
            if is_content and rec.chunks_sent > 0 and turn.delay_chunk > 0:
                if pending:  # a block's stop/start goes out at once, the pause is before the delta
                    await conn.send(pending)
                    pending = b""
                await conn.sleep(turn.delay_chunk)
            pending += data
            if not is_content:
                continue
            await conn.send(pending)
            pending = b""
            rec.chunks_sent += 1
            if turn.abort_after is not None and rec.chunks_sent >= turn.abort_after:
                rec.aborted, rec.finished_at = True, time.monotonic()
                conn.writer.transport.abort()
                return False
        if turn.hang or turn.delay_chunk > 0:
            await conn.send(pending)
            pending = b""
        if turn.hang:
            await conn.sleep(turn.hang_timeout)
        if turn.delay_chunk > 0:
            await conn.sleep(turn.delay_chunk)
        if turn.error_status is not None:  # error_in_stream
            message = turn.error_message or f"scripted error {turn.error_status}"
            etype = turn.error_type or ERROR_TYPES.get(turn.error_status, "api_error")
            pending += _sse("error", {"error": {"type": etype, "message": message}, "request_id": request_id})
        else:
            delta = {"stop_reason": stop_reason, "stop_sequence": None}
            pending += _sse("message_delta", {"delta": delta, "usage": {"output_tokens": output_tokens}})
            pending += _sse("message_stop", {})
        await conn.send(pending + b"0\r\n\r\n")
        rec.completed, rec.finished_at = True, time.monotonic()
        return True

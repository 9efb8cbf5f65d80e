"""A lean streaming path for OpenAI-compatible chat completions, under pydantic-ai's unchanged model.

Why: profiled per streamed chunk, the openai SDK's `AsyncStream` spent more CPU than pydantic-ai's
own machinery: a pure-Python SSE decoder and `construct_type`, which builds every chunk's pydantic
objects field by field in Python (~0.4 ms a chunk here against ~0.03 ms for pydantic-core's
`model_validate_json`), and a request-side `maybe_transform` that walks every message and tool
schema through the SDK's TypedDict annotations before the body is sent.

The seam is the SDK client, not the model: `LeanAsyncOpenAI` is an `AsyncOpenAI` whose
`chat.completions.create(stream=True)` sends the body pydantic-ai built without the transform and
reads the answer with `LeanChunkStream`. Everything else is the SDK's own code, so it behaves as
before: pydantic-ai's `OpenAIChatModel` still maps messages, tools, settings, reasoning fields,
`<think>` tags, usage and finish reasons; the SDK's `_post` still adds auth and headers, retries
429/5xx (and connection errors) `max_retries` times honouring `Retry-After`, applies timeouts, and
raises its own `APIStatusError` classes, which pydantic-ai maps to `ModelHTTPError`/`ModelAPIError`
exactly as before (tasks_app/runtime/failures.py sees no difference). Requests go through the
`http_client` given to the client (console/outbound.py's guarded one). Non-streamed requests take
the SDK's path unchanged.

The stream also reads ahead (`_ReadAhead`): the body is read in a task of its own as it arrives,
and plain text that has all arrived by the time pydantic-ai asks for the next chunk is given as one
chunk (`extend_text` says what counts as plain text: what pydantic-ai maps the same either way). A
busy process so pays pydantic-ai's per-delta work once per read instead of once per token; a model
whose tokens come slower than they are taken sees every chunk given as it arrives, none held back.
The agent ends with the same parts and text; only a run of text deltas may come as fewer deltas.

`LeanChunkStream` is an `AsyncStream`, so closing it (the stop path: pydantic-ai's `async with
response`, `close_stream()`) closes the HTTP response, and with it the model's connection, at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import operator
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import pydantic
from openai import APIConnectionError, APIError, APITimeoutError, AsyncOpenAI, AsyncStream
from openai._base_client import make_request_options
from openai._compat import cached_property
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._streaming_cleanup import drain_response_async
from openai._types import NotGiven, Omit
from openai._utils import is_mapping
from openai.lib._chat_completion_resources import validate_response_format
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

_T = TypeVar("_T")

# Keyword arguments of `create` that are request options, not body fields.
_OPTION_ARGS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


class LeanChunkStream(AsyncStream[_T]):
    """The SDK's stream of chat completion chunks with a cheaper SSE reader and chunk builder.

    Behaves as `AsyncStream.__stream__` in legacy mode: `data: [DONE]` ends it (the rest of an
    HTTP/1.1 body is drained for connection reuse), an `{"error": ...}` payload raises the SDK's
    `APIError`, transport failures raise `APITimeoutError`/`APIConnectionError`, and the response is
    closed however iteration ends. Only the cost differs: lines are split on bytes, and a chunk is
    validated by pydantic-core from its JSON text; a chunk that does not validate (a provider's
    non-standard value) is built the SDK's lenient way, so nothing it accepted is refused.
    """

    async def __stream__(self) -> AsyncIterator[_T]:
        response = self.response
        cast_to: Any = self._cast_to
        fast = cast_to is ChatCompletionChunk
        ahead = _ReadAhead(self._iter_data(), response.request)
        try:
            while True:
                if not ahead.items:
                    await ahead.wait()
                    if not ahead.items:  # the body ended or failed
                        if ahead.error is not None:
                            raise ahead.error
                        return
                held: Any = None  # the last chunk read, not yet given: the next one may extend it
                while ahead.items:  # what has arrived by now: consecutive text merged
                    data = ahead.items.popleft()
                    if data.startswith("[DONE]"):
                        if held is not None:
                            yield held
                        await ahead.finish()
                        if response.http_version == "HTTP/1.1":
                            await drain_response_async(response)
                        return
                    item = None
                    if fast and '"error"' not in data:
                        with contextlib.suppress(pydantic.ValidationError):
                            item = ChatCompletionChunk.model_validate_json(data)
                    if item is not None and held is not None and extend_text(held, item):
                        continue
                    if held is not None:  # an error payload raises after what came before it
                        yield held
                        held = None
                    if item is None:  # the SDK's lenient way: given as it is, never merged
                        yield self._slow_item(data, cast_to)
                    else:
                        held = item
                if held is not None:
                    yield held
        finally:
            try:
                await ahead.close()
            finally:  # even when the close is cut short (a cancelled scope cancels every await in it)
                await response.aclose()
                await ahead.close_source()

    def _slow_item(self, data: str, cast_to: Any) -> _T:
        """The SDK's own handling of one event's data: error check, then its lenient constructor."""
        parsed = json.loads(data)
        if is_mapping(parsed) and parsed.get("error"):
            error = parsed.get("error")
            message = error.get("message") if is_mapping(error) else None
            if not message or not isinstance(message, str):
                message = "An error occurred during streaming"
            raise APIError(message=message, request=self.response.request, body=parsed["error"])
        return self._client._process_response_data(data=parsed, cast_to=cast_to, response=self.response)

    async def _iter_data(self) -> AsyncGenerator[str, None]:
        """The `data` of each server-sent event (multi-line data joined with newlines, as the SDK does).

        Lines end with LF, CRLF or CR; a CR that ends a network chunk waits for the next one, so a
        CRLF split across two chunks is one line end. Comments, `event:`, `id:` and `retry:` lines
        are read and dropped: the chat completions stream carries everything in `data`. An event
        the body ends without a blank line after is dropped, as the SSE spec and the SDK do.
        """
        buffer = b""
        data: list[str] = []
        try:
            async for piece in self.response.aiter_bytes():
                buffer = buffer + piece if buffer else piece
                if b"\r" in buffer:
                    keep_cr = buffer.endswith(b"\r")
                    if keep_cr:
                        buffer = buffer[:-1]
                    buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                    if keep_cr:
                        buffer += b"\r"
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line:
                        if data:
                            yield "\n".join(data)
                            data = []
                    elif line.startswith(b"data:"):
                        value = line[5:]
                        if value.startswith(b" "):
                            value = value[1:]
                        data.append(value.decode())
            if buffer == b"\r" and data:  # the body's last line end was a lone CR
                yield "\n".join(data)
        except timeout_exceptions() as err:
            raise APITimeoutError(request=self.response.request) from err
        except request_exceptions() as err:
            raise APIConnectionError(request=self.response.request) from err


class _ReadAhead:
    """A response body's SSE data read in a task of its own, as fast as it arrives.

    Why: pydantic-ai takes one chunk at a time and does a good deal of work per chunk (its parts
    manager, the run's event machinery, the runtime's mapping). When it falls behind, as in a busy
    process, what the model sent meanwhile waits here instead of in the socket, and the stream
    gives a run of plain text that has all arrived as one chunk. Nothing is waited for: a chunk that
    has not arrived is never waited on, so no text is held back.

    The source (the body's reader) is kept until the stream has ended: a source finalized early
    closes the response, and with it a keep-alive connection whose body's end is still to be drained.
    A stream dropped without being closed (pydantic-ai always closes its own) keeps reading until its
    body ends or its read timeout: the reader holds it, as a reader in the socket would not.
    """

    def __init__(self, source: AsyncGenerator[str, None], request: Any) -> None:
        self.items: collections.deque[str] = collections.deque()
        self.error: BaseException | None = None
        self.done = False
        self.source = source
        self._request = request
        self._closing = False
        self._waiter: asyncio.Future[None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())
        self._task.add_done_callback(self._ended)

    async def _read(self) -> None:
        try:
            async for data in self.source:
                self.items.append(data)
                self._wake()
                if data.startswith("[DONE]"):
                    return
        except Exception as exc:  # the reader's failure is the stream's, raised where it is read
            self.error = exc

    def _ended(self, task: asyncio.Task[None]) -> None:
        """However the reader ended, even cancelled before it ran: the stream sees the end."""
        if self.error is None and not self._closing:
            if task.cancelled():  # cancelled from outside (not by close()): as a dropped connection
                self.error = APIConnectionError(request=self._request)
            else:
                self.error = task.exception()  # what is not an Exception (SystemExit, ...), retrieved
        self.done = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until something has arrived or the body has ended (`items` empty then: see `error`)."""
        if self.items or self.done:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def finish(self) -> None:
        """After `[DONE]`: the reader has stopped by itself (in the step that read it, so this does not
        wait in practice); it must be over before anything else reads the body (the drain)."""
        await asyncio.wait({self._task})

    async def close(self) -> None:
        """Stop reading (a stream closed early: its connection closes with the read)."""
        self._closing = True
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})

    async def close_source(self) -> None:
        """Close the body's reader once the reader task is over (it may not be, if `close` was cut)."""
        if self._task.done():
            await self.source.aclose()


# What says two chunks are of one response (the `obfuscation` padding aside, see extend_text).
_RESPONSE = operator.attrgetter("id", "model", "created", "object", "service_tier", "system_fingerprint")


def extend_text(held: ChatCompletionChunk, item: ChatCompletionChunk) -> bool:
    """Append `item`'s text to `held`, when `item` is nothing but more of `held`'s plain text.

    Plain text is what pydantic-ai maps the same whether it comes as one delta or two: the same
    response (id, model, created, tier, fingerprint), one choice with only `content` (a string) in
    both, no finish reason, usage, logprobs, refusal, tool calls, audio or provider extras (reasoning
    fields are extras), no `<` in either piece (a thinking tag such as `<think>` counts only as a
    delta of its own) and not a whitespace-only first piece (some profiles drop that at a text
    part's start). Only the `obfuscation` padding is not compared: pydantic-ai's mapping never reads
    it. `held` is the stream's own, not yet given to anyone: it is changed in place.
    """
    if held.usage is not None or item.usage is not None or held.model_extra or item.model_extra:
        return False
    if held.moderation is not None or item.moderation is not None:
        return False
    if _RESPONSE(held) != _RESPONSE(item):
        return False
    if len(held.choices) != 1 or len(item.choices) != 1:
        return False
    a, b = held.choices[0], item.choices[0]
    if a.index != b.index or a.finish_reason or b.finish_reason or a.logprobs is not None:
        return False
    if b.logprobs is not None or a.model_extra or b.model_extra or a.delta is None or b.delta is None:
        return False
    da, db = a.delta, b.delta
    text, more = da.content, db.content
    if type(text) is not str or type(more) is not str or not text or not more:
        return False
    if text.isspace() or "<" in text or "<" in more or db.role not in (None, da.role):
        return False
    for delta in (da, db):
        if delta.tool_calls or delta.refusal or delta.function_call or delta.audio or delta.model_extra:
            return False
    da.content = text + more
    return True


class LeanAsyncCompletions(AsyncCompletions):
    """`chat.completions` whose streamed `create` skips the request transform and reads lean."""

    async def create(self, **kwargs: Any) -> Any:  # type: ignore[override]
        """A streamed request goes out as built; anything else is the SDK's `create`."""
        if kwargs.get("stream") is not True:
            return await super().create(**kwargs)
        validate_response_format(kwargs.get("response_format"))
        # The SDK's transform only drops omitted values here (the chat params declare no aliases or
        # formats); pydantic-ai passes plain dicts and lists, which the SDK's JSON encoder writes as is.
        body = {
            key: value
            for key, value in kwargs.items()
            if key not in _OPTION_ARGS and not isinstance(value, (Omit, NotGiven))
        }
        timeout = kwargs.get("timeout", NotGiven())
        return await self._post(
            "/chat/completions",
            body=body,
            options=make_request_options(
                extra_headers=kwargs.get("extra_headers"),
                extra_query=kwargs.get("extra_query"),
                extra_body=kwargs.get("extra_body"),
                timeout=timeout,
                security={"bearer_auth": True},
            ),
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=LeanChunkStream[ChatCompletionChunk],
        )


class LeanAsyncChat(AsyncChat):
    @cached_property
    def completions(self) -> LeanAsyncCompletions:
        return LeanAsyncCompletions(self._client)


class LeanAsyncOpenAI(AsyncOpenAI):
    """An `AsyncOpenAI` whose streamed chat completions take the lean path (see the module doc).

    `with_options()` (pydantic-ai uses it for a per-run `max_retries`) copies this class, so copies
    stay lean.
    """

    @cached_property
    def chat(self) -> LeanAsyncChat:  # type: ignore[override]
        return LeanAsyncChat(self)

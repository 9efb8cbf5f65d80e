"""The lean OpenAI-compatible stream (tasks_app/runtime/lean_openai.py) against the openai SDK's own.

Each behaviour is checked the same way on both clients, pydantic-ai's real `OpenAIChatModel` over a
real scripted server, on the guarded outbound client: what the agent ends with (parts, usage,
finish reasons), the errors it raises and how the runtime words them, retries, and a cancelled run
closing the model's connection. The SSE reader is also compared with the SDK's on awkward bytes.

One difference is by design: the lean stream reads ahead, and plain text that has all arrived by
the time pydantic-ai asks for the next chunk is given as one chunk (lean_openai.extend_text). So
the agent sees the same parts, text, usage and finish reasons, and the same events except that a
run of text deltas may come as fewer deltas with the same text; paced chunks are never merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import anyio
import httpx2
import pytest
from openai import APIError, AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

from console import outbound
from tasks_app.models import Task
from tasks_app.runtime import failures, llm
from tasks_app.runtime.lean_openai import LeanAsyncOpenAI, LeanChunkStream
from tests.tools.scripted_model import ScriptedModel, ToolCall, Turn

CLIENTS = {"sdk": AsyncOpenAI, "lean": LeanAsyncOpenAI}


def chat_model(kind: str, base_url: str, max_retries: int = 2) -> OpenAIChatModel:
    client = CLIENTS[kind](
        api_key="x",
        base_url=base_url,
        max_retries=max_retries,
        timeout=30,
        http_client=outbound.client(timeout=30, follow_redirects=True),
    )
    return OpenAIChatModel(
        "scripted-model", provider=OpenAICompatibleProvider("scripted", openai_client=client)
    )


def make_agent(model: OpenAIChatModel) -> Agent:
    agent = Agent(model)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    return agent


async def run_agent(agent: Agent, prompt: str) -> tuple[list[str], list[Any]]:
    """(the stream's event kinds, the run's messages)."""
    kinds: list[str] = []
    result = None
    async with agent.run_stream_events(prompt) as stream:
        async for event in stream:
            kinds.append(type(event).__name__ + ":" + type(getattr(event, "delta", event)).__name__)
            result = getattr(event, "result", result)
    assert result is not None
    return kinds, result.all_messages()


def responses(messages: list[Any]) -> list[dict[str, Any]]:
    """What a model response says, without what differs between two runs (times, response ids)."""
    out = []
    for m in messages:
        if not isinstance(m, ModelResponse):
            continue
        details = {k: v for k, v in (m.provider_details or {}).items() if k != "timestamp"}
        out.append(
            {
                "parts": [(type(p).__name__, vars(p)) for p in m.parts],
                "usage": m.usage,
                "finish_reason": m.finish_reason,
                "model_name": m.model_name,
                "details": details,
            }
        )
    return out


SCRIPTS: dict[str, list[Turn]] = {
    "text": [Turn.reply("The answer is forty-two, as computed.", chunks=9)],
    "reasoning_content": [
        Turn.think("Let me think about it.", "Done thinking.", reasoning_chunks=3, chunks=3)
    ],
    "reasoning": [
        Turn.think(
            "Hmm, reasoning field.", "Answer.", reasoning_field="reasoning", reasoning_chunks=2, chunks=2
        )
    ],
    "think_tags": [Turn.reply("<think>pondering quietly</think>The visible answer.", chunks=7)],
    # each tag a delta of its own, as models send them: pydantic-ai makes a thinking part of it
    "think_tag_deltas": [
        Turn.reply(["<think>", "pondering", " quietly", "</think>", "The visible", " answer", "."])
    ],
    # a whitespace-only start, then text: never merged into the text after it
    "leading_whitespace": [Turn.reply([" ", "\n", "Hello", " there", "\n", "friend."])],
    "tools": [
        Turn.tools(ToolCall("add", {"a": 1, "b": 2}, id="c1"), ToolCall("add", {"a": 3, "b": 4}, id="c2")),
        Turn.reply("Sums are 3 and 7.", chunks=4),
    ],
    "length": [Turn.reply("cut off", chunks=2, finish_reason="length", usage=(11, 2))],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_the_lean_stream_gives_the_agent_what_the_sdk_gives(name):
    results = {}
    for kind in CLIENTS:
        with ScriptedModel(list(SCRIPTS[name])) as model:
            results[kind] = await run_agent(make_agent(chat_model(kind, model.base_url)), "go")
            assert model.errors == []
    kinds_sdk, messages_sdk = results["sdk"]
    kinds_lean, messages_lean = results["lean"]
    assert without_text_deltas(kinds_lean) == without_text_deltas(kinds_sdk)
    assert responses(messages_lean) == responses(messages_sdk)
    assert responses(messages_lean)  # the comparison compared something


def without_text_deltas(kinds: list[str]) -> list[str]:
    """The event kinds but content deltas: merged text gives fewer (the first even goes into its
    part's start), as text or, between thinking tags, as thinking."""
    return [kind for kind in kinds if kind not in (TEXT_DELTA, "PartDeltaEvent:ThinkingPartDelta")]


TEXT_DELTA = "PartDeltaEvent:TextPartDelta"


async def test_text_that_arrives_together_is_one_delta_and_paced_text_is_not_held_back():
    text = [f"piece{i} " for i in range(20)]
    with ScriptedModel([Turn.reply(text)]) as model:
        kinds, messages = await run_agent(make_agent(chat_model("lean", model.base_url)), "go")
    # all 20 were sent at once: the reader had them before pydantic-ai asked for the second
    assert kinds.count(TEXT_DELTA) < 19
    assert messages[-1].parts[0].content == "".join(text)
    # 50 ms apart: each has been given before the next arrives, so each is its own delta
    with ScriptedModel([Turn.reply(text[:5], delay_chunk=0.05)]) as model:
        kinds, messages = await run_agent(make_agent(chat_model("lean", model.base_url)), "go")
    assert kinds.count(TEXT_DELTA) == 4  # the first piece starts the part
    assert messages[-1].parts[0].content == "".join(text[:5])


@pytest.mark.parametrize(
    "turn",
    [
        Turn.error(400, "bad request", code="invalid_value"),
        Turn.error(401, "no key", type="invalid_api_key"),
        Turn.error(404, "no such model", code="model_not_found"),
        Turn.error(500, "boom"),
        Turn.error(429, "slow down", type="rate_limit_error"),
    ],
    ids=lambda t: str(t.error_status),
)
async def test_errors_are_the_same_model_errors_and_read_the_same(turn):
    seen = {}
    for kind in CLIENTS:
        with ScriptedModel([turn]) as model:
            agent = make_agent(chat_model(kind, model.base_url, max_retries=0))
            with pytest.raises(ModelHTTPError) as caught:
                await run_agent(agent, "go")
        exc = caught.value
        seen[kind] = (type(exc), exc.status_code, exc.body, failures.classify(exc, Task(), []))
    assert seen["lean"] == seen["sdk"]
    assert seen["lean"][1] == turn.error_status


async def test_a_connection_dropped_mid_stream_is_the_same_error():
    seen = {}
    for kind in CLIENTS:
        with (
            ScriptedModel([Turn.reply("abcdefgh", chunks=8, abort_after=2)]) as model,
            pytest.raises(ModelAPIError) as caught,
        ):
            await run_agent(make_agent(chat_model(kind, model.base_url, max_retries=0)), "go")
        exc = caught.value
        seen[kind] = (type(exc), type(exc.__cause__), failures.classify(exc, Task(), []))
    assert seen["lean"] == seen["sdk"]


async def test_429_and_503_are_retried_honouring_retry_after():
    script = [Turn.error(429, retry_after=1.5), Turn.error(503), Turn.reply("Fine now.", chunks=2)]
    with ScriptedModel(script) as model:
        _, messages = await run_agent(make_agent(chat_model("lean", model.base_url)), "go")
        first, second, third = model.requests
    assert messages[-1].parts[0].content == "Fine now."
    assert [first.status, second.status, third.status] == [429, 503, 200]
    # A lower bound, not a speed: without the header the first retry comes after at most 0.5 s.
    assert second.received_at - first.received_at >= 1.4


async def test_retries_stop_at_max_retries():
    with ScriptedModel([Turn.error(500)] * 3) as model:
        with pytest.raises(ModelHTTPError):
            await run_agent(make_agent(chat_model("lean", model.base_url, max_retries=2)), "go")
        assert len(model.requests) == 3


async def test_cancelling_a_run_closes_the_model_connection():
    with ScriptedModel([Turn.reply("Working on it", chunks=3, hang=True)]) as model:
        agent = make_agent(chat_model("lean", model.base_url))
        run = asyncio.ensure_future(run_agent(agent, "go"))
        await model.wait_request_async(0, until=lambda r: r.chunks_sent >= 3)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        request = await model.wait_request_async(0, until=lambda r: r.done)
    assert request.disconnected and not request.completed


async def test_the_runtime_builds_lean_clients_unless_turned_off(settings):
    assert llm.lean_stream()
    assert isinstance(llm._client("openai_compatible", "http://127.0.0.1:9/v1", "k"), LeanAsyncOpenAI)
    settings.LLM_LEAN_STREAM = False
    assert not llm.lean_stream()
    client = llm._client("openai_compatible", "http://127.0.0.1:9/v1", "k")
    assert type(client) is AsyncOpenAI
    # pydantic-ai's per-run `max_retries` copies the client: the copy stays lean.
    settings.LLM_LEAN_STREAM = True
    lean = llm._client("openai_compatible", "http://127.0.0.1:9/v1", "k")
    assert isinstance(lean.with_options(max_retries=0), LeanAsyncOpenAI)


# -- the SSE reader, byte for byte against the SDK's -------------------------------------------------


class Pieces(httpx2.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece


def chunk_json(content: str, **extra: Any) -> str:
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
            **extra,
        }
    )


async def read(stream_cls: type, pieces: list[bytes]) -> tuple[list[Any], BaseException | None]:
    client = AsyncOpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(200, stream=Pieces(pieces), request=request)
    stream = stream_cls(cast_to=ChatCompletionChunk, response=response, client=client)
    items: list[Any] = []
    try:
        async for item in stream:
            items.append(item)
    except APIError as exc:
        return items, exc
    return items, None


def content(item: Any) -> Any:
    return item.choices[0].delta.content if item.choices else None


def assert_runs_merged(sdk_items: list[Any], lean_items: list[Any]) -> None:
    """Each lean item is the SDK's next item with the text of the SDK items after it that it took.

    Everything else of it (ids, fields, extras, the choice) is the first one's, as the SDK read it.
    """
    i = 0
    for item in lean_items:
        first, text = sdk_items[i], content(sdk_items[i])
        i += 1
        while text != content(item) and i < len(sdk_items) and isinstance(text, str):
            text += content(sdk_items[i])
            i += 1
        expected = first.model_dump()
        if first.choices:
            expected["choices"][0]["delta"]["content"] = text
        assert item.model_dump() == expected
        assert item.model_extra == first.model_extra
    assert i == len(sdk_items)


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


CASES = {
    "lf": f"data: {chunk_json('a')}\n\ndata: {chunk_json('b')}\n\ndata: [DONE]\n\n".encode(),
    "crlf": f"data: {chunk_json('a')}\r\n\r\ndata: {chunk_json('b')}\r\n\r\ndata: [DONE]\r\n\r\n".encode(),
    "cr": f"data: {chunk_json('a')}\r\rdata: {chunk_json('b')}\r\r".encode(),
    "comments_and_fields": (
        f": keep-alive\n\nevent: message\nid: 7\nretry: 100\ndata: {chunk_json('x')}\n\n"
        f"data:{chunk_json('no space')}\n\n"
    ).encode(),
    "multiline_data": (
        b'data: {"id": "c", "object": "chat.completion.chunk",\ndata: "created": 1, '
        b'"model": "m", "choices": []}\n\n'
    ),
    "no_final_blank_line": f"data: {chunk_json('first')}\n\ndata: {chunk_json('last')}".encode(),
    "non_standard_value": f"data: {chunk_json('t', service_tier='on_demand')}\n\n".encode(),
    "unicode": f"data: {chunk_json('héllo ☃')}\n\n".encode(),
    "error_payload": (
        f'data: {chunk_json("a")}\n\ndata: {{"error": {{"message": "overloaded", "code": "x"}}}}\n\n'
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("piece", [1, 7, 10_000])
async def test_the_sse_reader_reads_what_the_sdk_reads(name, piece):
    pieces = split_every(CASES[name], piece)
    sdk_items, sdk_error = await read(AsyncStream[ChatCompletionChunk], pieces)
    lean_items, lean_error = await read(LeanChunkStream[ChatCompletionChunk], pieces)
    assert_runs_merged(sdk_items, lean_items)
    assert (type(lean_error), getattr(lean_error, "body", None), str(lean_error)) == (
        type(sdk_error),
        getattr(sdk_error, "body", None),
        str(sdk_error),
    )
    assert sdk_items or sdk_error


def chunk_with(delta: dict[str, Any], choice: dict[str, Any] | None = None, **extra: Any) -> str:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", **extra}
    body["choices"] = [{"index": 0, "delta": delta, "finish_reason": None, **(choice or {})}]
    return json.dumps(body)


PLAIN = chunk_with({"content": "plain"})
# Pairs of chunks that arrive together and must stay two: merging would change what pydantic-ai makes.
NOT_MERGED = {
    "think_tag_first": (chunk_with({"content": "<think>"}), PLAIN),
    "think_tag_second": (PLAIN, chunk_with({"content": "</think>"})),
    "whitespace_first": (chunk_with({"content": " \n"}), PLAIN),
    "finish_reason": (PLAIN, chunk_with({"content": "end"}, {"finish_reason": "stop"})),
    "usage": (
        PLAIN,
        chunk_with({"content": "x"}, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
    ),
    "reasoning_field": (chunk_with({"reasoning_content": "hmm"}), PLAIN),
    "reasoning_beside_text": (PLAIN, chunk_with({"content": "x", "reasoning_content": "hmm"})),
    "other_response": (PLAIN, chunk_with({"content": "x"}, id="other")),
    "other_model": (PLAIN, chunk_with({"content": "x"}, model="m2")),
    "tool_call": (
        PLAIN,
        chunk_with(
            {
                "tool_calls": [
                    {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]
            }
        ),
    ),
    "logprobs": (PLAIN, chunk_with({"content": "x"}, {"logprobs": {"content": [], "refusal": None}})),
    "refusal": (PLAIN, chunk_with({"refusal": "no"})),
    "content_parts": (PLAIN, chunk_with({"content": [{"type": "text", "text": "x"}]})),
    "empty_content": (PLAIN, chunk_with({"content": ""})),
    "provider_extra": (PLAIN, chunk_with({"content": "x"}, citations=["u"])),
    "role_change": (PLAIN, chunk_with({"content": "x", "role": "tool"})),
    "service_tier": (PLAIN, chunk_with({"content": "x"}, service_tier="flex")),
    "fingerprint": (PLAIN, chunk_with({"content": "x"}, system_fingerprint="fp2")),
    "created": (PLAIN, chunk_with({"content": "x"}, created=2)),
    "choice_extra": (PLAIN, chunk_with({"content": "x"}, {"stop_reason": None})),
    "text_with_tool_call": (
        PLAIN,
        chunk_with(
            {
                "content": "x",
                "tool_calls": [{"index": 0, "id": "t", "type": "function", "function": {"name": "f"}}],
            }
        ),
    ),
    "text_with_refusal": (PLAIN, chunk_with({"content": "x", "refusal": "no"})),
    "finish_reason_first": (chunk_with({"content": "end"}, {"finish_reason": "stop"}), PLAIN),
    "logprobs_first": (chunk_with({"content": "x"}, {"logprobs": {"content": [], "refusal": None}}), PLAIN),
    "other_index": (PLAIN, chunk_with({"content": "x"}, {"index": 1})),
    "two_choices": (
        PLAIN,
        json.dumps(
            {
                **json.loads(PLAIN),
                "choices": [
                    {"index": 0, "delta": {"content": "a"}, "finish_reason": None},
                    {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
                ],
            }
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(NOT_MERGED))
async def test_chunks_that_would_map_differently_are_not_merged(name):
    body = "".join(f"data: {c}\n\n" for c in NOT_MERGED[name]).encode() + b"data: [DONE]\n\n"
    sdk_items, _ = await read(AsyncStream[ChatCompletionChunk], [body])
    lean_items, error = await read(LeanChunkStream[ChatCompletionChunk], [body])
    assert error is None and len(sdk_items) == 2
    dump = [i.model_dump(warnings=False) for i in sdk_items]
    assert [i.model_dump(warnings=False) for i in lean_items] == dump


async def test_plain_text_that_arrived_together_is_one_chunk():
    body = (
        f"data: {chunk_with({'role': 'assistant', 'content': 'Hel'})}\n\n"
        f"data: {chunk_with({'content': 'lo, '})}\n\n"
        f"data: {chunk_with({'content': 'world'}, obfuscation='pad1')}\n\n"
        f"data: {chunk_with({}, {'finish_reason': 'stop'})}\n\ndata: [DONE]\n\n"
    ).encode()
    items, error = await read(LeanChunkStream[ChatCompletionChunk], [body])
    assert error is None
    assert [(i.choices[0].delta.role, content(i), i.choices[0].finish_reason) for i in items] == [
        ("assistant", "Hello, world", None),
        (None, None, "stop"),
    ]


async def test_an_error_payload_raises_after_the_text_before_it():
    body = (
        f"data: {chunk_json('a')}\n\ndata: {chunk_json('b')}\n\n"
        'data: {"error": {"message": "overloaded"}}\n\n'
        f"data: {chunk_json('never')}\n\n"
    ).encode()
    items, error = await read(LeanChunkStream[ChatCompletionChunk], [body])
    assert [content(i) for i in items] == ["ab"]
    assert isinstance(error, APIError) and str(error) == "overloaded"


# -- the read-ahead against a server whose writes the test paces ----------------------------------


class PacedServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 answering each request with `script(writer)`."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.connections = 0

    async def __aenter__(self) -> PacedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head.split(b"\r\n")
                        if h.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                )
                await self.script(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def sse(content: str | None) -> bytes:
    return http_chunk(f"data: {chunk_json(content) if content is not None else '[DONE]'}\n\n".encode())


async def stream_texts(client: LeanAsyncOpenAI, seen: Any = None) -> list[str]:
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "go"}], stream=True
    )
    texts = []
    async for item in stream:
        texts.append(content(item))
        if seen is not None:
            seen(item)
    return texts


async def test_a_body_whose_end_comes_later_keeps_its_connection_for_the_next_request():
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(sse("a") + sse("b") + sse(None))
        await writer.drain()
        await asyncio.sleep(0.05)  # the chunked body's end in a write of its own, as servers often send it
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with PacedServer(script) as server:
        client = LeanAsyncOpenAI(api_key="x", base_url=server.url, max_retries=0)
        for _ in range(3):
            assert "".join(await stream_texts(client)) == "ab"
        await client.close()
    assert server.connections == 1  # drained and reused, not closed under the drain


async def test_a_chunk_is_given_before_the_next_one_is_sent():
    given_first = asyncio.Event()
    sent_second = []

    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(sse("first"))
        await writer.drain()
        # the next chunk only once the stream has given the first (or after a long wait, if it holds it)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(given_first.wait(), 10)
        sent_second.append(True)
        writer.write(sse("second") + sse(None) + b"0\r\n\r\n")
        await writer.drain()

    def seen(item: Any) -> None:
        if content(item) == "first":
            assert not sent_second  # given while the server still waited for it to be given
            given_first.set()

    async with PacedServer(script) as server:
        client = LeanAsyncOpenAI(api_key="x", base_url=server.url, max_retries=0)
        assert await stream_texts(client, seen) == ["first", "second"]
        await client.close()


async def test_a_pull_cut_by_a_cancelled_scope_still_closes_the_response():
    # pydantic-ai pulls chunks inside anyio cancel scopes; a cancelled scope cancels every await in it,
    # the stream's clean-up included: the response must be closed all the same.
    with ScriptedModel([Turn.reply(["a", "b", "c"], hang=True)]) as model:
        client = LeanAsyncOpenAI(api_key="x", base_url=model.base_url, max_retries=0, timeout=30)
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}], stream=True
        )
        text = ""
        while text != "abc":
            text += content(await stream.__anext__()) or ""
        with anyio.move_on_after(0.2) as scope:  # the model hangs: the pull waits until the scope ends
            await stream.__anext__()
        assert scope.cancelled_caught
        assert stream.response.is_closed
        request = await model.wait_request_async(0, until=lambda r: r.done)
        assert request.disconnected
        await client.close()

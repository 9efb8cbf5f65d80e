"""The lean OpenAI-compatible stream (tasks_app/runtime/lean_openai.py) against the openai SDK's own.

Each behaviour is checked the same way on both clients, pydantic-ai's real `OpenAIChatModel` over a
real scripted server, on the guarded outbound client: what the agent ends with (parts, usage,
finish reasons), the errors it raises and how the runtime words them, retries, and a cancelled run
closing the model's connection. The SSE reader is also compared with the SDK's on awkward bytes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

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
    assert kinds_lean == kinds_sdk
    assert responses(messages_lean) == responses(messages_sdk)
    assert responses(messages_lean)  # the comparison compared something


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
    assert [i.model_dump() for i in lean_items] == [i.model_dump() for i in sdk_items]
    assert [i.model_extra for i in lean_items] == [i.model_extra for i in sdk_items]
    assert (type(lean_error), getattr(lean_error, "body", None), str(lean_error)) == (
        type(sdk_error),
        getattr(sdk_error, "body", None),
        str(sdk_error),
    )
    assert sdk_items or sdk_error

"""Self-checks of the real test servers in `tests.tools`, driven by real clients (pydantic-ai, httpx, pypdf)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pypdf
import pytest
from mcp.shared.exceptions import MCPError
from pydantic_ai import (
    Agent,
    AgentRunResultEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
)
from pydantic_ai.exceptions import ModelConnectionError, ModelRateLimitError, ModelServerError
from pydantic_ai.mcp import MCPToolset

from tests.tools.file_server import FileServer, small_pdf, tiny_png
from tests.tools.fixtures import REPORT_TEXT
from tests.tools.mcp_server import AuthMCPServer
from tests.tools.scripted_model import ScriptedModel, ToolCall, Turn, tool_then_reply

pytest_plugins = ["tests.tools.fixtures"]  # the fixtures scripted_model, mcp_server, file_server
pytestmark = pytest.mark.timeout(60)


def make_agent(model: ScriptedModel, **kw: Any) -> Agent:
    agent = Agent(model.chat_model(), **kw)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @agent.tool_plain
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    return agent


async def collect(agent: Agent, prompt: str, **kw: Any) -> list[Any]:
    events = []
    async with agent.run_stream_events(prompt, **kw) as stream:
        async for ev in stream:
            events.append(ev)
    return events


# --------------------------------------------------------------------------------------------------
# Scripted model


async def test_streamed_run_with_tool_call_and_text(scripted_model: ScriptedModel):
    scripted_model.set_script(
        [
            Turn.tool("add", {"a": 2, "b": 40}, usage=(11, 7)),
            Turn.reply("The answer is 42.", chunks=5, usage=(20, 5)),
        ]
    )
    events = await collect(make_agent(scripted_model), "What is 2 + 40?")

    calls = [e for e in events if isinstance(e, FunctionToolCallEvent)]
    results = [e for e in events if isinstance(e, FunctionToolResultEvent)]
    assert [(c.part.tool_name, c.part.args_as_dict()) for c in calls] == [("add", {"a": 2, "b": 40})]
    assert [r.part.content for r in results] == [42]
    text_starts = [e for e in events if isinstance(e, PartStartEvent) and e.part.part_kind == "text"]
    text_deltas = [e for e in events if isinstance(e, PartDeltaEvent) and isinstance(e.delta, TextPartDelta)]
    assert len(text_starts) == 1 and len(text_deltas) == 4  # 5 chunks: the first starts the part
    final = events[-1]
    assert isinstance(final, AgentRunResultEvent) and final.result.output == "The answer is 42."
    usage = final.result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (31, 12, 2)

    # The client can finish reading before the server thread records the end of its answer.
    await scripted_model.wait_request_async(1)
    first, second = scripted_model.requests
    assert first.stream and second.stream and first.completed and second.completed
    assert first.body["stream_options"] == {"include_usage": True}
    assert not first.disconnected and not second.disconnected
    assert "add" in first.tool_names and first.user_text == "What is 2 + 40?"
    # The second request carries the history: the assistant's tool call, then its result.
    assistant = [m for m in second.messages if m["role"] == "assistant"]
    call = assistant[0]["tool_calls"][0]
    assert call["function"]["name"] == "add" and json.loads(call["function"]["arguments"]) == {
        "a": 2,
        "b": 40,
    }
    assert second.tool_results == [{"role": "tool", "tool_call_id": call["id"], "content": "42"}]
    assert scripted_model.errors == [] and scripted_model.remaining() == 0


async def test_reasoning_is_streamed_before_text(scripted_model: ScriptedModel):
    scripted_model.set_script([Turn.think("Let me think about it.", "Yes.", reasoning_chunks=3)])
    events = await collect(make_agent(scripted_model), "Think first")
    thinking = [e for e in events if isinstance(e, PartStartEvent) and isinstance(e.part, ThinkingPart)]
    thinking_deltas = [
        e for e in events if isinstance(e, PartDeltaEvent) and isinstance(e.delta, ThinkingPartDelta)
    ]
    assert len(thinking) == 1 and len(thinking_deltas) == 2
    kinds = [e.part.part_kind for e in events if isinstance(e, PartStartEvent)]
    assert kinds == ["thinking", "text"]
    assert events[-1].result.output == "Yes."


async def test_parallel_tool_calls(scripted_model: ScriptedModel):
    scripted_model.set_script(
        [
            Turn.tools(
                ("add", {"a": 1, "b": 2}), ToolCall("shout", {"text": "hi"}, id="call_x"), arg_chunks=4
            ),
            "ok",
        ]
    )
    result = await make_agent(scripted_model).run("two tools", model_settings={"max_retries": 0})
    assert result.output == "ok"
    second = scripted_model.requests[1]
    by_id = {m["tool_call_id"]: m["content"] for m in second.tool_results}
    assert by_id["call_x"] == "HI" and sorted(by_id.values()) == ["3", "HI"]


async def test_non_streaming_answers(scripted_model: ScriptedModel):
    scripted_model.set_script([Turn.tool("add", {"a": 1, "b": 1}), Turn.think("hmm", "Two.", usage=(3, 4))])
    result = await make_agent(scripted_model).run("1+1")
    assert result.output == "Two."
    assert [r.stream for r in scripted_model.requests] == [False, False]
    assert result.usage.output_tokens >= 4
    thinking = [p for p in result.all_messages()[-1].parts if isinstance(p, ThinkingPart)]
    assert thinking[0].content == "hmm"


async def test_http_errors(scripted_model: ScriptedModel):
    scripted_model.set_script([Turn.error(429, "slow down", retry_after=0), Turn.error(500, "kaput")])
    agent = make_agent(scripted_model)
    with pytest.raises(ModelRateLimitError) as rate:
        await agent.run("a", model_settings={"max_retries": 0})
    assert rate.value.status_code == 429 and rate.value.body["message"] == "slow down"
    with pytest.raises(ModelServerError) as server:
        await agent.run("b", model_settings={"max_retries": 0})
    assert server.value.status_code == 500
    assert [r.status for r in scripted_model.requests] == [429, 500]

    # The OpenAI SDK retries a 5xx by itself; every attempt takes the next turn.
    scripted_model.set_script([Turn.error(503), "after retry"])
    result = await agent.run("c", model_settings={"max_retries": 1})
    assert result.output == "after retry"
    assert [r.status for r in scripted_model.requests][-2:] == [503, 200]


async def test_exhausted_script_is_a_500_and_recorded(scripted_model: ScriptedModel):
    scripted_model.set_script(["only one"])
    agent = make_agent(scripted_model)
    assert (await agent.run("1")).output == "only one"
    with pytest.raises(ModelServerError):
        await agent.run("2", model_settings={"max_retries": 0})
    assert len(scripted_model.errors) == 1 and "exhausted" in scripted_model.errors[0]


async def test_disconnect_flag_when_client_cancels_mid_stream(scripted_model: ScriptedModel):
    scripted_model.set_script(
        [Turn.reply("word " * 50, chunks=50, delay_chunk=0.05), Turn.reply("x", hang=True)]
    )
    agent = make_agent(scripted_model)

    task = asyncio.create_task(collect(agent, "long answer"))
    await scripted_model.wait_request_async(0, lambda r: r.chunks_sent >= 3)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = await scripted_model.wait_request_async(0)
    assert first.disconnected and not first.completed
    assert 3 <= first.chunks_sent < 50
    assert first.finished_at - cancelled_at < 5.0  # ~ms; generous for loaded CI machines

    # A stream that hangs after its content (no finish chunk): the client leaving is noticed too.
    task = asyncio.create_task(collect(agent, "hang"))
    await scripted_model.wait_request_async(1, lambda r: r.chunks_sent == 1)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = await scripted_model.wait_request_async(1)
    assert second.disconnected and second.chunks_sent == 1


def test_disconnect_before_first_byte_raw_http(scripted_model: ScriptedModel):
    scripted_model.set_script([Turn.reply("late", delay_first=30)])
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{scripted_model.base_url}/chat/completions", json=body, timeout=0.3)
    req = scripted_model.wait_request(0)
    assert req.disconnected and req.status == 0 and req.first_byte_at is None


async def test_abort_mid_stream_is_a_connection_error(scripted_model: ScriptedModel):
    scripted_model.set_script([Turn.reply("a b c d", chunks=4, abort_after=2)])
    with pytest.raises(ModelConnectionError):
        await collect(make_agent(scripted_model), "abort", model_settings={"max_retries": 0})
    req = scripted_model.requests[0]
    assert req.aborted and req.chunks_sent == 2 and not req.completed and not req.disconnected


def test_wire_format_raw_sse(scripted_model: ScriptedModel):
    scripted_model.set_script(
        [
            Turn(
                reasoning="r1r2",
                reasoning_chunks=2,
                text="hi",
                tool_calls=[ToolCall("add", {"a": 1}, id="c1")],
            )
        ]
    )
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    with httpx.stream("POST", f"{scripted_model.base_url}/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "reasoning_content": "r1"}
    assert deltas[1] == {"reasoning_content": "r2"} and deltas[2] == {"content": "hi"}
    assert deltas[3]["tool_calls"][0] | {"function": None} == {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": None,
    }
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5])
    assert json.loads(args) == {"a": 1}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


async def test_concurrent_conversations_keep_their_own_scripts(scripted_model: ScriptedModel):
    n = 20
    for i in range(n):
        scripted_model.set_script(
            [
                Turn.tool("add", {"a": i, "b": i}, delay_first=0.01),
                Turn.reply(f"conv {i}: {2 * i}", chunks=3),
            ],
            key=f"[conv-{i}]",
        )
    agent = make_agent(scripted_model)
    results = await asyncio.gather(*(agent.run(f"[conv-{i}] please add") for i in range(n)))
    assert [r.output for r in results] == [f"conv {i}: {2 * i}" for i in range(n)]
    for i in range(n):
        reqs = scripted_model.requests_for(f"[conv-{i}]")
        assert len(reqs) == 2 and reqs[1].tool_results[0]["content"] == str(2 * i)
    assert scripted_model.errors == []


async def test_function_script_for_benchmarks(scripted_model: ScriptedModel):
    answer = "done " * 10
    scripted_model.set_script(tool_then_reply("add", {"a": 2, "b": 3}, answer, chunks=20))
    agent = make_agent(scripted_model)

    async def one(i: int) -> str:
        events = await collect(agent, f"task {i}")
        return events[-1].result.output

    outputs = await asyncio.gather(*(one(i) for i in range(30)))
    assert outputs == [answer] * 30
    await scripted_model.wait_for_async(lambda: all(r.done for r in scripted_model.requests))
    reqs = scripted_model.requests
    assert len(reqs) == 60 and all(r.completed and not r.disconnected for r in reqs)
    assert sum(r.chunks_sent for r in reqs) == 30 * (20 + 2)  # 20 text chunks + 2 argument pieces per task


# --------------------------------------------------------------------------------------------------
# MCP server


@dataclass
class Deps:
    mcp_token: str


def mcp_agent(model: ScriptedModel, server: AuthMCPServer, **toolset_kw: Any) -> Agent[Deps]:
    toolset = MCPToolset(server.url, auth=lambda ctx: ctx.deps.mcp_token, **toolset_kw)
    return Agent(model.chat_model(), toolsets=[toolset], deps_type=Deps)


async def test_mcp_runs_call_as_their_own_users(scripted_model: ScriptedModel, mcp_server: AuthMCPServer):
    for who in ("alice", "bob"):
        scripted_model.set_script(
            [Turn.tool("whoami"), Turn.tool("add", {"a": 20, "b": 22}), f"done {who}"], key=f"[{who}]"
        )
    agent = mcp_agent(scripted_model, mcp_server)
    ra, rb = await asyncio.gather(
        agent.run("[alice] who am I?", deps=Deps("tok-alice")),
        agent.run("[bob] who am I?", deps=Deps("tok-bob")),
    )
    assert (ra.output, rb.output) == ("done alice", "done bob")
    assert scripted_model.requests_for("[alice]")[1].tool_results[0]["content"] == "alice"
    assert scripted_model.requests_for("[bob]")[1].tool_results[0]["content"] == "bob"
    assert scripted_model.requests_for("[bob]")[2].tool_results[-1]["content"] == "42"
    assert sorted((c.name, c.user) for c in mcp_server.calls) == [
        ("add", "alice"),
        ("add", "bob"),
        ("whoami", "alice"),
        ("whoami", "bob"),
    ]
    assert {"whoami", "add", "slow", "fail", "echo"} <= set(scripted_model.requests[0].tool_names)
    assert mcp_server.rejected == []


async def test_mcp_direct_calls_and_tool_error(mcp_server: AuthMCPServer):
    async with MCPToolset(mcp_server.url, auth="tok-bob", tool_error_behavior="error") as toolset:
        assert await toolset.direct_call_tool("whoami", {}) == "bob"
        assert await toolset.direct_call_tool("add", {"a": 2, "b": 3}) == 5
        with pytest.raises(Exception, match="boom"):
            await toolset.direct_call_tool("fail", {"message": "boom"})
    assert [(c.name, c.status, c.user) for c in mcp_server.calls] == [
        ("whoami", "completed", "bob"),
        ("add", "completed", "bob"),
        ("fail", "failed", "bob"),
    ]


async def test_mcp_tool_error_reaches_the_model(scripted_model: ScriptedModel, mcp_server: AuthMCPServer):
    scripted_model.set_script([Turn.tool("fail", {"message": "disk on fire"}), "recovered"])
    result = await mcp_agent(scripted_model, mcp_server).run("try", deps=Deps("tok-alice"))
    assert result.output == "recovered"
    assert "disk on fire" in scripted_model.requests[1].tool_results[0]["content"]


async def test_mcp_wrong_token_is_401(scripted_model: ScriptedModel, mcp_server: AuthMCPServer):
    # Raw HTTP: no token or an unknown one -> 401 before MCP sees the request.
    async with httpx.AsyncClient() as client:
        no_token = await client.post(mcp_server.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        bad = await client.post(mcp_server.url, json={}, headers={"Authorization": "Bearer nope"})
    assert no_token.status_code == 401 and bad.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")

    # pydantic-ai: a bearer-string `auth` -> a generic MCPError (code -32603) at toolset entry, 401 lost.
    with pytest.raises(MCPError) as err:
        async with MCPToolset(mcp_server.url, auth="wrong-token"):
            pass
    assert err.value.error.code == -32603

    # In an agent run it fails before the first model request.
    scripted_model.set_script(["never sent"])
    with pytest.raises(MCPError):
        await mcp_agent(scripted_model, mcp_server).run("hi", deps=Deps("wrong-token"))
    assert scripted_model.requests == []
    assert len(mcp_server.rejected) >= 3 and mcp_server.calls == []


class NeedsSignIn(Exception):
    pass


class BearerOr401(httpx2.Auth):
    """The way to keep the 401: set the header, raise our own exception on 401/403."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        if response.status_code in (401, 403):
            raise NeedsSignIn(response.status_code)


async def test_mcp_401_kept_with_httpx2_auth(scripted_model: ScriptedModel, mcp_server: AuthMCPServer):
    scripted_model.set_script(["never sent"])
    toolset = MCPToolset(mcp_server.url, auth=lambda ctx: BearerOr401(ctx.deps.mcp_token))
    agent = Agent(scripted_model.chat_model(), toolsets=[toolset], deps_type=Deps)
    with pytest.raises(RuntimeError) as err:
        await agent.run("hi", deps=Deps("wrong-token"))
    assert isinstance(err.value.__cause__, NeedsSignIn) and err.value.__cause__.args == (401,)
    scripted_model.set_script([Turn.tool("whoami"), "ok"])
    assert (await agent.run("hi", deps=Deps("tok-alice"))).output == "ok"
    assert [c.user for c in mcp_server.calls] == ["alice"]


async def test_mcp_in_flight_call_is_cancelled_when_the_run_is(
    scripted_model: ScriptedModel, mcp_server: AuthMCPServer
):
    scripted_model.set_script([Turn.tool("slow", {"seconds": 30}), "never"])
    task = asyncio.create_task(mcp_agent(scripted_model, mcp_server).run("slow", deps=Deps("tok-alice")))
    rec = await mcp_server.wait_for_async(lambda: mcp_server.calls and mcp_server.calls[0])
    assert rec.name == "slow" and rec.status == "started" and rec.user == "alice"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await mcp_server.wait_for_async(lambda: rec.status != "started", timeout=10)
    assert rec.status == "cancelled" and rec.finished_at - rec.started_at < 10
    assert len(scripted_model.requests) == 1


# --------------------------------------------------------------------------------------------------
# File server


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        out.append((kind, body))
        pos += 12 + length
    return out


async def test_file_server_serves_files_and_counts_hits(file_server: FileServer):
    async with httpx.AsyncClient() as client:
        png = await client.get(file_server.url("/tiny.png"))
        pdf = await client.get(file_server.url("/report.pdf"))
        csv = await client.get(file_server.url("/data.csv"))
        txt = await client.get(file_server.url("/notes.txt?x=1"))
        head = await client.head(file_server.url("/tiny.png"))
        missing = await client.get(file_server.url("/missing.pdf"))
    assert png.headers["content-type"] == "image/png"
    assert pdf.headers["content-type"] == "application/pdf"
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("name,qty,price")
    assert txt.headers["content-type"].startswith("text/plain") and "café" in txt.text
    assert (
        head.status_code == 200
        and head.content == b""
        and head.headers["content-length"] == str(len(png.content))
    )
    assert missing.status_code == 404

    kinds = [kind for kind, _ in png_chunks(png.content)]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert pypdf.PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text() == REPORT_TEXT
    assert file_server.hits["/tiny.png"] == 2 and file_server.hits["/missing.pdf"] == 1


def test_payload_helpers():
    ihdr = dict(png_chunks(tiny_png(4, 3, (0, 128, 255))))[b"IHDR"]
    assert struct.unpack(">II", ihdr[:8]) == (4, 3)
    idat = zlib.decompress(dict(png_chunks(tiny_png(4, 3, (0, 128, 255))))[b"IDAT"])
    assert idat == (b"\x00" + bytes((0, 128, 255)) * 4) * 3
    pdf = small_pdf(["Line (one)", "Line two \\ back"])
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    assert reader.pages[0].extract_text() == "Line (one)\nLine two \\ back"
    with FileServer({"/x.bin": (b"\x00\x01", "application/octet-stream")}) as files:
        files.add("/y.json", '{"a": 1}', headers={"x-extra": "1"})
        r = httpx.get(files.url("/y.json"))
        assert r.json() == {"a": 1} and r.headers["x-extra"] == "1"
        assert httpx.get(files.url("/x.bin")).content == b"\x00\x01"


async def test_process_mode_serves_from_a_child_process():
    script = tool_then_reply("add", {"a": 1, "b": 2}, "three", chunks=2)
    async with ScriptedModel(
        script, scripts={"[slow]": [Turn.reply("z" * 40, chunks=40, delay_chunk=0.05)]}, process=True
    ) as model:
        assert model._proc is not None and model._proc.pid != os.getpid()
        agent = make_agent(model)
        assert (await agent.run("one")).output == "three"
        task = asyncio.create_task(collect(agent, "[slow] go"))
        await model.wait_request_async(2, lambda r: r.chunks_sent >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        slow = await model.wait_request_async(2)
        assert slow.key == "[slow]" and slow.disconnected
        model.add_turns("appended", key="[more]")
        assert model.remaining("[more]") == 1
        assert (await agent.run("[more] x")).output == "appended"
        assert model.requests[1].tool_results[0]["content"] == "3" and model.errors == []
        with pytest.raises(TypeError, match="picklable"):
            ScriptedModel(lambda body: "x", process=True).start()
    assert len(model.requests) == 4  # still readable after stop()

"""The "remote" services of the benchmarks: the scripted model and the MCP server, in their own process.

They run in a child process so their CPU (and GIL) is not shared with the benchmark's HTTP clients:
seen from the server under test they are remote endpoints, as a real model API and MCP server are.
The parent talks to them over a `multiprocessing` pipe (`Services.call`).

Every task's prompt carries a tag `[bench:MODE:ID]`. The model's `key_fn` returns `MODE:ID`, so
each recorded request names the task it served, and one responder answers by MODE:

- `agent`:    call the MCP tool `add`, then answer in `agent_chunks` chunks (no delay).
- `capacity`: held at a gate until the benchmark opens it (`call("release")`), so every task stays
              executing while the ramp goes on; then `capacity_delay_first` s to the first byte
              and `capacity_chunks` chunks, one every `capacity_delay_chunk` s.
- `stop`:     stream a few chunks and hang until the client goes away (stop benchmark).
- `plain`:    answer in `agent_chunks` chunks at once, no tool call (the LangGraph comparison: the
              agent has an MCP server in its graph that this prompt does not call).
- `long`:     answer in `long_chunks` chunks at once, no tool call (CPU per streamed chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import re
import threading
from dataclasses import dataclass, field
from typing import Any

TAG = re.compile(r"\[bench:([a-z]+):([^\]]+)\]")
MCP_TOKEN = "tok-bench"
ANSWER_WORDS = "The sum of two and three is five, computed with the add tool as requested."


@dataclass
class ServicesConfig:
    agent_chunks: int = 20
    long_chunks: int = 500
    capacity_delay_first: float = 1.0
    capacity_chunks: int = 10
    capacity_delay_chunk: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def agent_answer(chunks: int) -> str:
    """The final answer of an `agent` task: `chunks` pieces joined (the model splits it back)."""
    words = (ANSWER_WORDS + " ") * max(1, chunks // 10 + 1)
    return words.strip()


def tag_of(body: dict[str, Any]) -> str | None:
    from tests.tools.scripted_model import first_user_text

    m = TAG.search(first_user_text(body))
    return f"{m.group(1)}:{m.group(2)}" if m else None


def make_responder(cfg: ServicesConfig):
    from tests.tools.scripted_model import Turn, first_user_text, last_message

    answer = agent_answer(cfg.agent_chunks)
    long_answer = agent_answer(cfg.long_chunks)
    capacity_text = " ".join(f"part{i}" for i in range(cfg.capacity_chunks))

    def respond(body: dict[str, Any]) -> Turn:
        m = TAG.search(first_user_text(body))
        mode = m.group(1) if m else "agent"
        if mode == "agent":
            if last_message(body).get("role") == "tool":
                return Turn.reply(answer, chunks=cfg.agent_chunks)
            return Turn.tool("add", {"a": 2, "b": 3})
        if mode == "capacity":
            return Turn.reply(
                capacity_text,
                chunks=cfg.capacity_chunks,
                delay_first=cfg.capacity_delay_first,
                delay_chunk=cfg.capacity_delay_chunk,
            )
        if mode == "plain":
            return Turn.reply(answer, chunks=cfg.agent_chunks)
        if mode == "long":
            return Turn.reply(long_answer, chunks=cfg.long_chunks)
        if mode == "stop":
            return Turn.reply("Working on it", chunks=3, hang=True)
        return Turn.reply("Unknown benchmark mode.")

    return respond


def _summary(r: Any) -> dict[str, Any]:
    return {
        "key": r.key,
        "status": r.status,
        "chunks_sent": r.chunks_sent,
        "completed": r.completed,
        "disconnected": r.disconnected,
        "received_at": r.received_at,
        "first_byte_at": r.first_byte_at,
        "finished_at": r.finished_at,
    }


def gated_model(*args: Any, **kwargs: Any) -> Any:
    """A ScriptedModel whose `capacity` requests wait at a gate before they are answered."""
    from tests.tools.scripted_model import ScriptedModel, _Disconnected

    class GatedModel(ScriptedModel):
        gate: asyncio.Event | None = None
        waiting = 0

        def release(self) -> None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._gate().set)

        def _gate(self) -> asyncio.Event:
            if self.gate is None:
                self.gate = asyncio.Event()
            return self.gate

        async def _answer(self, conn: Any, rec: Any, body: Any) -> bool:
            gate = self._gate()
            if isinstance(body, dict) and (tag_of(body) or "").startswith("capacity:") and not gate.is_set():
                self.waiting += 1
                try:
                    opened = asyncio.ensure_future(gate.wait())
                    await asyncio.wait({opened, conn.watch()}, return_when=asyncio.FIRST_COMPLETED)
                    if not opened.done():
                        opened.cancel()
                    if conn.peer_closed():
                        raise _Disconnected
                finally:
                    self.waiting -= 1
            return await super()._answer(conn, rec, body)

    return GatedModel(*args, **kwargs)


def _main(conn: Any, cfg: ServicesConfig) -> None:
    from tests.tools.mcp_server import AuthMCPServer

    model = gated_model(make_responder(cfg), key_fn=tag_of, record_bodies=False).start()
    mcp = AuthMCPServer({MCP_TOKEN: "bench"}).start()
    conn.send({"model": model.base_url, "mcp": mcp.url})
    try:
        while True:
            try:
                cmd, arg = conn.recv()
            except EOFError:
                break
            if cmd == "quit":
                conn.send(None)
                break
            if cmd == "records":  # requests whose key starts with arg (None: all)
                conn.send(
                    [_summary(r) for r in model.requests if arg is None or (r.key or "").startswith(arg)]
                )
            elif cmd == "stats":
                conn.send(
                    {
                        "model_requests": len(model.requests),
                        "model_errors": list(model.errors[:5]),
                        "mcp_calls": len(mcp.calls),
                        "mcp_rejected": len(mcp.rejected),
                    }
                )
            elif cmd == "inflight":  # model requests not finished yet, by key prefix
                conn.send(
                    sum(1 for r in model.requests if not r.done and (r.key or "").startswith(arg or ""))
                )
            elif cmd == "gated":  # requests waiting at the capacity gate
                conn.send(model.waiting)
            elif cmd == "release":
                model.release()
                conn.send(None)
            elif cmd == "reset":
                model.reset()
                model.gate = None
                model.set_script(make_responder(cfg))
                mcp.reset()
                conn.send(None)
            else:
                conn.send(ValueError(f"unknown command {cmd!r}"))
    finally:
        mcp.stop()
        model.stop()


class Services:
    """Starts the child process; `call(cmd, arg)` is thread-safe (one request at a time)."""

    def __init__(self, cfg: ServicesConfig) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_main, args=(child, cfg), name="bench-services", daemon=True)
        self._lock = threading.Lock()
        self._proc.start()
        child.close()
        if not self._conn.poll(60):
            raise TimeoutError("the services process did not start in 60 s")
        urls = self._conn.recv()
        self.model_url: str = urls["model"]
        self.mcp_url: str = urls["mcp"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def call(self, cmd: str, arg: Any = None) -> Any:
        with self._lock:
            self._conn.send((cmd, arg))
            out = self._conn.recv()
        if isinstance(out, Exception):
            raise out
        return out

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(EOFError, OSError):
                self.call("quit")
            self._proc.join(15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

"""This project against LangGraph's server and the bare libraries, side by side in one run (issue 17).

    .venv/bin/python bench/compare.py                 # the full run (about 10-15 minutes)
    .venv/bin/python bench/compare.py --quick         # small counts (100 capacity tasks), about 3 minutes
    .venv/bin/python bench/compare.py --only langgraph,ours --runs 3
    make bench-compare

Every target of issue 17 is a ratio to a peer, so the peers are measured in the same run, on the same
scripted OpenAI-compatible model (bench/services.py, its own process), with the same prompt: mode
`plain`, a 20-chunk answer, no tool call. Phases (`--only` takes their names):

- langgraph:  LangGraph's in-memory server (`langgraph dev`, 16 jobs per worker) serving a LangChain
              `create_agent` agent (bench/langgraph_app/), in its own virtual environment
              (.cache/bench-langgraph/venv, made on demand from bench/langgraph_app/requirements.txt).
              Stateless `POST /runs/stream`, stream_mode messages-tuple, read to the end.
- langchain:  the same agent in-process, no server (bench/langgraph_app/inprocess.py, a subprocess).
- pydantic:   pydantic-ai alone in-process (our runtime library; no server, no MCP; one shared
              AsyncOpenAI client), in a subprocess of this script so it has its own GIL.
- library:    pydantic-ai as our runtime drives it, in-process in a subprocess: the lean model client
              (tasks_app/runtime/lean_openai.py), the model and Agent built per run, the events taken by an
              event_stream_handler (tasks_app/runtime/runner.py); no server, no MCP, no writes. What our
              server's run costs before anything of the server's own.
- ours:       the embedded default (bench/runtime.py's Server: daphne, SQLite, in-process worker), a
              builtin agent with one MCP server in its graph that the prompt does not call; REST
              create + SSE to task_finished; the SSE ids (event seq) are checked for gaps and repeats.
- both:       the same agent, clients and checks as ours against the scaled-out deployment on this
              machine's two cores (docs/deploy.md, tests/cluster.py): one daphne web process and one
              Celery worker process (`--pool threads --concurrency 64`; `--both-workers N` for more),
              a private PostgreSQL database, Redis as the channel layer (live events from the worker
              to the web process), RabbitMQ as the broker; the server settings of ours (SERVER_ENV).
              Its CPU per run is its processes' (web + workers), not PostgreSQL's, Redis's or RabbitMQ's.
- chunk:      CPU per streamed chunk, a 500-chunk answer (mode `long`), one run at a time: the
              server's CPU per run / 500 against pydantic-ai's own CPU per run / 500.
- platform:   bench/runtime.py's platform phase at concurrency 32 on this tree and on the commit
              issue 17 starts from (BASE_COMMIT, a git worktree in .cache/bench-base).
- stop:       bench/runtime.py's stop phase: 32 stops at once.
- capacity:   bench/runtime.py's capacity phase with 2,000 tasks on a fresh server process.

Each of langgraph, langchain, pydantic, library, ours, both, chunk and platform runs `--runs` times (rounds
interleaved, ratios computed per round, the median and range printed); stop and capacity once.
A failed run (a wrong answer, a lost or repeated event, a failed task) fails the benchmark: exit 1.
Results: bench/results/compare[-quick]-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.runtime import (  # noqa: E402
    RESULTS,
    SERVER_ENV,
    Server,
    bench_capacity,
    bench_platform,
    bench_stop,
    client,
    code_version,
    context_switches,
    cpu_seconds,
    latency_stats,
    machine,
    pct,
    print_table,
    run_at,
)
from bench.services import MCP_TOKEN, Services, ServicesConfig, agent_answer  # noqa: E402
from tests.cluster import RABBITMQ_URL, Cluster, cluster_env  # noqa: E402
from tests.live import LiveServer, free_port, wait_for_port  # noqa: E402

SELF = Path(__file__).resolve()
BASE_COMMIT = "3c28cfe"  # where issue 17 starts
APP = ROOT / "bench" / "langgraph_app"
LG_VENV = ROOT / ".cache" / "bench-langgraph" / "venv"
BASE_TREE = ROOT / ".cache" / "bench-base"
PLAIN_CHUNKS = 20
LONG_CHUNKS = 500
CONC = 32
# after the gate opens: 1 s to the first byte, then 20 chunks 50 ms apart (as bench/runtime.py)
CAPACITY_MODEL = {"capacity_delay_first": 1.0, "capacity_chunks": 20, "capacity_delay_chunk": 0.05}
PHASES = (
    "langgraph",
    "langchain",
    "pydantic",
    "library",
    "ours",
    "both",
    "chunk",
    "platform",
    "stop",
    "capacity",
)
REDIS_URL = "redis://127.0.0.1:6379/0"  # the scaled-out deployment's channel layer
# Celery threads per worker process: each holds one run until it ends (acks late), so at least CONC,
# with room for the runs that finish while the next ones arrive (the runs share one event loop)
BOTH_WORKER_CONCURRENCY = 64


# ------------------------------------------------------------------------------------------------
# LangGraph's side: its virtual environment and its dev server


def python312() -> str:
    """The interpreter .venv was made from (3.12), else pyenv's newest 3.12."""
    cfg = ROOT / ".venv" / "pyvenv.cfg"
    with contextlib.suppress(OSError):
        for line in cfg.read_text().splitlines():
            if line.startswith("executable"):
                exe = line.split("=", 1)[1].strip()
                if Path(exe).exists():
                    return exe
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
        found = sorted(Path(root, "versions").glob("3.12*/bin/python"))
        if found:
            return str(found[-1])
    exe = shutil.which("python3.12")
    if not exe:
        raise RuntimeError("no Python 3.12 for LangGraph's virtual environment (pyenv install 3.12)")
    return exe


def langgraph_venv() -> Path:
    """The LangGraph venv, made on demand from the pinned requirements; reused while its stamp matches."""
    reqs = APP / "requirements.txt"
    digest = hashlib.sha256(reqs.read_bytes()).hexdigest()[:16]
    stamp = LG_VENV / ".bench-stamp"
    if stamp.exists() and stamp.read_text().strip() == digest:
        return LG_VENV
    print(f"-- making LangGraph's virtual environment in {LG_VENV.relative_to(ROOT)} ...", flush=True)
    if not (LG_VENV / "bin" / "python").exists():
        subprocess.run([python312(), "-m", "venv", str(LG_VENV)], check=True)
    subprocess.run(
        [str(LG_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r", str(reqs)],
        check=True,
    )
    stamp.write_text(digest + "\n")
    return LG_VENV


def langgraph_env(model_url: str) -> dict[str, str]:
    """No tracing, no analytics, no LangSmith key: nothing leaves the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    env.update(
        BENCH_MODEL_URL=model_url,
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_OTEL_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("REDIS_URL", None)
    return env


class LangGraphServer:
    """`langgraph dev` on a free port, run from a copy of bench/langgraph_app in a scratch directory.

    The copy matters: langgraph dev resolves the graph's path against its working directory (not
    the config's) and writes its in-memory store's snapshots (.langgraph_api/) there.
    """

    def __init__(self, venv: Path, model_url: str, workdir: Path) -> None:
        self.venv, self.model_url = venv, model_url
        self.dir = workdir / "langgraph_app"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "langgraph.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        shutil.copytree(APP, self.dir, ignore=shutil.ignore_patterns("__pycache__", ".langgraph_api"))
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's life
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "langgraph"), "dev", "--no-browser", "--no-reload",
             "--host", "127.0.0.1", "--port", str(self.port), "--n-jobs-per-worker", "16",
             "--config", "langgraph.json"],
            cwd=self.dir, env=langgraph_env(self.model_url), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, timeout=90, proc=self.proc)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ok", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"langgraph dev did not answer /ok: {self.log_tail()}")

    def cpu(self) -> float:
        """CPU of the server and its children (uvicorn may run in the CLI's process or a child)."""
        return sum(cpu_seconds(pid) for pid in self._processes())

    def switches(self) -> int:
        """Context switches of the server and its children so far."""
        return sum(context_switches(pid) for pid in self._processes())

    def _processes(self) -> list[int]:
        found = [self.pid]
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    found += [int(pid) for pid in (child / "children").read_text().split()]
        return found

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its children
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


async def langgraph_one(client: httpx.AsyncClient, expected: str) -> dict[str, Any]:
    """One stateless run over `POST /runs/stream` (messages-tuple), read to the end and checked."""
    prompt = f"[bench:plain:lg-{uuid.uuid4().hex[:12]}] What is 2 + 3?"
    body = {
        "assistant_id": "agent",
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "stream_mode": ["messages-tuple"],
    }
    parts: list[str] = []
    event = ""
    t0 = time.perf_counter()
    async with client.stream("POST", "/runs/stream", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "error":
                    raise RuntimeError(f"LangGraph run failed: {line[6:300]}")
                if event == "messages":
                    message, _meta = json.loads(line[6:])
                    if message.get("type") == "AIMessageChunk" and message.get("content"):
                        parts.append(message["content"])
    took = time.perf_counter() - t0
    if "".join(parts) != expected or len(parts) != PLAIN_CHUNKS:
        raise RuntimeError(f"LangGraph answered {len(parts)} chunks: {''.join(parts)[:80]!r}")
    return {"latency": took, "chunks": len(parts)}


async def measure_levels(
    one: Callable[[int], Awaitable[dict[str, Any]]],
    cfg: dict[str, Any],
    cpu: Callable[[], float] | None = None,
    switches: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Warm-up, then concurrency 1 (latency) and concurrency 32 (throughput), errors counted.
    `cpu` and `switches`: the server's CPU seconds and context switches so far, read per level."""
    await run_at(4, cfg["warmup"], one)
    out: dict[str, Any] = {}
    for conc, runs in ((1, cfg["c1_runs"]), (CONC, cfg["c32_runs"])):
        errors: list[str] = []
        cpu0 = cpu() if cpu else 0.0
        switches0 = switches() if switches else 0
        results, wall = await run_at(conc, runs, one, cfg["budget"], errors)
        level = latency_stats([r["latency"] for r in results], wall)
        level["errors"], level["error_samples"] = len(errors), errors[:5]
        if cpu:
            level["server_cpu_ms_per_run"] = round((cpu() - cpu0) / max(len(results), 1) * 1000, 2)
        if switches:
            level["server_switches_per_run"] = round((switches() - switches0) / max(len(results), 1), 1)
        level["chunks_per_run"] = pct([r["chunks"] for r in results], 50)
        out[f"c{conc}"] = level
    return out


async def phase_langgraph(lg: LangGraphServer, cfg: dict[str, Any]) -> dict[str, Any]:
    expected = agent_answer(PLAIN_CHUNKS)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=lg.url, timeout=120, limits=limits) as client:
        return await measure_levels(lambda _i: langgraph_one(client, expected), cfg, lg.cpu, lg.switches)


def subprocess_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{Path(cmd[1]).name} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


async def phase_langchain(venv: Path, model_url: str, cfg: dict[str, Any], workdir: Path) -> dict[str, Any]:
    expected = workdir / "answer-plain.txt"
    await asyncio.to_thread(expected.write_text, agent_answer(PLAIN_CHUNKS))
    cmd = [str(venv / "bin" / "python"), str(APP / "inprocess.py"), "--model-url", model_url,
           "--expected-file", str(expected), "--chunks", str(PLAIN_CHUNKS), "--c1", str(cfg["c1_runs"]),
           "--c32", str(cfg["c32_runs"]), "--conc", str(CONC), "--warmup", str(cfg["warmup"])]  # fmt: skip
    return await asyncio.to_thread(subprocess_json, cmd, 900)


# ------------------------------------------------------------------------------------------------
# pydantic-ai alone (this script again, as a subprocess in .venv)


async def pydantic_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the subprocess: pydantic-ai's `run_stream_events` with one shared AsyncOpenAI client."""
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
    from pydantic_ai.run import AgentRunResultEvent

    chunks = LONG_CHUNKS if args.mode == "long" else PLAIN_CHUNKS
    expected = agent_answer(chunks)
    if args.lean:  # the client our runtime gives OpenAI-compatible endpoints (runtime/lean_openai.py)
        from tasks_app.runtime.lean_openai import LeanAsyncOpenAI as AsyncOpenAI
    client = AsyncOpenAI(api_key="sk-bench-model", base_url=args.model_url, max_retries=2, timeout=120)
    model = OpenAIChatModel(
        "scripted", provider=OpenAICompatibleProvider("openai_compatible", openai_client=client)
    )
    agent = Agent(model, instructions="Answer briefly.")
    errors: list[str] = []

    async def as_our_runtime(_i: int) -> dict[str, Any]:
        """As tasks_app/runtime/runner.py drives it: the model and Agent built per run, the run's
        events taken by an `event_stream_handler` in the run's own task (no server, no MCP, no writes)."""
        prompt = f"[bench:{args.mode}:lib-{uuid.uuid4().hex[:12]}] What is 2 + 3?"
        t0 = time.perf_counter()
        parts = 0

        async def handle(_ctx: Any, events: Any) -> None:
            nonlocal parts
            async for event in events:
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    parts += bool(event.part.content)
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    parts += bool(event.delta.content_delta)

        per_run = OpenAIChatModel(
            "scripted", provider=OpenAICompatibleProvider("openai_compatible", openai_client=client)
        )
        result = await Agent(per_run, instructions="Answer briefly.").run(prompt, event_stream_handler=handle)
        # the lean stream gives text that has arrived together as one delta: fewer parts, same text
        if result.output != expected or not 1 <= parts <= chunks:
            raise RuntimeError(f"pydantic-ai answered {parts} chunks: {str(result.output)[:80]!r}")
        return {"latency": time.perf_counter() - t0, "chunks": parts}

    async def one(_i: int) -> dict[str, Any]:
        prompt = f"[bench:{args.mode}:pa-{uuid.uuid4().hex[:12]}] What is 2 + 3?"
        t0 = time.perf_counter()
        output, parts = None, 0
        async with agent.run_stream_events(prompt) as stream:
            async for event in stream:
                if (
                    isinstance(event, PartStartEvent)
                    and isinstance(event.part, TextPart)
                    and event.part.content
                ):
                    parts += 1
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    parts += bool(event.delta.content_delta)
                elif isinstance(event, AgentRunResultEvent):
                    output = event.result.output
        if output != expected or parts != chunks:
            raise RuntimeError(f"pydantic-ai answered {parts} chunks: {str(output)[:80]!r}")
        return {"latency": time.perf_counter() - t0, "chunks": parts}

    if args.lean:
        one = as_our_runtime
    await run_at(4, args.warmup, one)
    out: dict[str, Any] = {}
    for conc, runs in ((1, args.c1), (CONC, args.c32)):
        if not runs:
            continue
        c0 = time.process_time()
        results, wall = await run_at(conc, runs, one, args.budget, errors)
        level = latency_stats([r["latency"] for r in results], wall)
        level["cpu_ms_per_run"] = round((time.process_time() - c0) / max(len(results), 1) * 1000, 3)
        out[f"c{conc}"] = level
    out["errors"], out["error_samples"] = len(errors), errors[:5]
    await client.close()
    return out


async def phase_pydantic(
    model_url: str, cfg: dict[str, Any], mode: str = "plain", lean: bool = False
) -> dict[str, Any]:
    c1, c32 = (cfg["chunk_runs"], 0) if mode == "long" else (cfg["c1_runs"], cfg["c32_runs"])
    cmd = [sys.executable, str(SELF), "--pydantic-worker", "--model-url", model_url,
           "--mode", mode, "--c1", str(c1), "--c32", str(c32), "--warmup", str(cfg["warmup"]),
           "--budget", str(cfg["budget"]), *(["--lean"] if lean else [])]  # fmt: skip
    return await asyncio.to_thread(subprocess_json, cmd, 900)


# ------------------------------------------------------------------------------------------------
# This project


@dataclass
class Stream:
    finished_at: float | None = None
    ids: list[int] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)
    text: str = ""
    final: dict[str, Any] | None = None


async def follow_checked(sse: httpx.AsyncClient, task_id: str) -> Stream:
    """Read the task's SSE stream to its end, keeping every frame's id (its event seq).

    To its end, as LangGraph's client reads `/runs/stream`: the server ends the stream after
    `task_finished`, and a client that hangs up first makes the next run open a new connection.
    A frame after `task_finished` is an error.
    """
    out = Stream()
    etype, eid = "", None
    async with sse.stream("GET", f"/agent-execution/{task_id}/events") as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if out.final is not None and line.startswith(("id: ", "event: ", "data: ")):
                raise RuntimeError(f"task {task_id}: a frame after task_finished: {line[:80]!r}")
            if line.startswith("id: "):
                eid = int(line[4:])
            elif line.startswith("event: "):
                etype = line[7:]
            elif line.startswith("data: "):
                if eid is not None:
                    out.ids.append(eid)
                eid = None
                out.types[etype] = out.types.get(etype, 0) + 1
                if etype == "chunk":
                    out.text += json.loads(line[6:])["data"]
                elif etype == "task_finished":
                    out.finished_at = time.perf_counter()
                    out.final = json.loads(line[6:])["data"]
    return out


def check_stream(task_id: str, seen: Stream, expected: str, chunks: int) -> None:
    final = seen.final or {}
    if final.get("status") != "completed" or final.get("result") != expected:
        raise RuntimeError(f"task {task_id}: {final.get('status')}: {str(final.get('result'))[:80]!r}")
    if seen.ids != list(range(1, len(seen.ids) + 1)):
        raise RuntimeError(f"task {task_id}: SSE ids with a gap or a repeat: {seen.ids[:60]}")
    # the runtime may coalesce the model's deltas into fewer chunk events: the text must match
    if not 1 <= seen.types.get("chunk", 0) <= chunks or seen.text != expected:
        raise RuntimeError(f"task {task_id}: {seen.types.get('chunk')} chunk events, text {seen.text[:60]!r}")


def mcp_graph(srv: Server) -> list[dict[str, Any]]:
    """One MCP server in the agent's graph (as bench_agent builds it); the prompt calls none of it."""
    settings = {"url": srv.services.mcp_url, "transport": "streamable-http", "auth_type": "api_key",
                "api_key": MCP_TOKEN}  # fmt: skip
    return [{"id": "gi-tools", "type": "mcp", "name": "Tools", "settings": {"mcp_settings": settings}}]


def ours_one(
    srv: Server, agent_id: str, mode: str, chunks: int
) -> Callable[[int], Awaitable[dict[str, Any]]]:
    expected = agent_answer(chunks)

    async def one(_i: int) -> dict[str, Any]:
        tag = f"[bench:{mode}:ours-{uuid.uuid4().hex[:12]}]"
        t0 = time.perf_counter()
        r = await srv.api.post(
            f"/agent-execution/{agent_id}",
            json={"input": {"text": f"{tag} What is 2 + 3?"}, "events_streaming": True},
        )
        r.raise_for_status()
        task_id = r.json()["id"]
        seen = await follow_checked(srv.sse, task_id)
        check_stream(task_id, seen, expected, chunks)
        return {"latency": (seen.finished_at or time.perf_counter()) - t0, "chunks": seen.types["chunk"]}

    return one


async def phase_ours(srv: Server, agent_id: str, cfg: dict[str, Any]) -> dict[str, Any]:
    return await measure_levels(
        ours_one(srv, agent_id, "plain", PLAIN_CHUNKS),
        cfg,
        lambda: cpu_seconds(srv.pid),
        lambda: context_switches(srv.pid),
    )


async def phase_chunk_ours(srv: Server, agent_id: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Server CPU per run of a 500-chunk answer, one run at a time (the server's CPU only)."""
    one = ours_one(srv, agent_id, "long", LONG_CHUNKS)
    for i in range(2):
        await one(i)
    errors: list[str] = []
    cpu0 = cpu_seconds(srv.pid)
    results, wall = await run_at(1, cfg["chunk_runs"], one, errors=errors)
    cpu = (cpu_seconds(srv.pid) - cpu0) / max(len(results), 1)
    return {
        **latency_stats([r["latency"] for r in results], wall),
        "errors": len(errors),
        "error_samples": errors[:5],
        "server_cpu_ms_per_run": round(cpu * 1000, 2),
        "cpu_ms_per_chunk": round(cpu * 1000 / LONG_CHUNKS, 4),
    }


# ------------------------------------------------------------------------------------------------
# This project scaled out on this machine (issue 17: concurrency 32 using both cores)


class ClusterServer(Server):
    """The scaled-out deployment as a Server to the phases (the same api / sse clients, agents, ours_one).

    One daphne web process and `workers` Celery worker processes, so the web side (REST, SSE) and the
    runs get a core each; a private PostgreSQL database, Redis as the channel layer and a private
    RabbitMQ queue (tests/cluster.py), all dropped or deleted in stop(). The settings are the embedded
    default's (SERVER_ENV): the two configurations differ in their deployment only.
    """

    def __init__(
        self,
        workdir: Path,
        services: Services,
        workers: int = 1,
        concurrency: int = BOTH_WORKER_CONCURRENCY,
    ) -> None:
        self.services = services
        self.workdir, self.workers, self.concurrency = workdir, workers, concurrency
        self.cluster: Cluster | None = None
        self.account = None
        self.started_in_s: float | None = None
        self.stopped = False

    async def start(self) -> None:
        t = time.perf_counter()
        env, database = await asyncio.to_thread(
            cluster_env, self.workdir, postgres=True, redis_url=REDIS_URL, **SERVER_ENV
        )
        self.cluster = Cluster(self.workdir, env, database=database)
        self.live = LiveServer(self.workdir, env)
        self.cluster.servers.append(self.live)  # before it starts: stop() ends it even if it never answers
        await asyncio.to_thread(self.live.start)  # migrates the private database first
        for _ in range(self.workers):
            await asyncio.to_thread(self.cluster.start_worker, self.concurrency)
        self.account = await asyncio.to_thread(self.live.account, "Bench Org", "bench@bench.test")
        self.api = client(self.live.api, self.account.api_key)
        self.sse = client(self.live.api, self.account.api_key, timeout=300)
        await self.wait_ready()
        self.started_in_s = round(time.perf_counter() - t, 1)

    @property
    def pids(self) -> list[int]:
        """The deployment's processes: the web server, then the workers (--pool threads: no children)."""
        assert self.cluster is not None
        return [self.pid, *(w.proc.pid for w in self.cluster.workers)]

    def cpu_by_process(self) -> list[float]:
        """CPU seconds of each process of the deployment, in the order of `pids`."""
        return [cpu_seconds(pid) for pid in self.pids]

    def cpu(self) -> float:
        """CPU of every process of the deployment (the services it uses are not counted)."""
        return sum(self.cpu_by_process())

    def log_text(self) -> str:
        """The web server's log, then each worker's."""
        if self.cluster is None:
            return ""
        parts = [s.log_text() for s in self.cluster.servers]
        parts += [f"--- {w.name}\n{w.log_text()}" for w in self.cluster.workers]
        return "\n".join(parts)

    async def stop(self) -> None:
        """Workers (warm shutdown), the web server, the private database and queue; safe to call twice."""
        for c in (getattr(self, "api", None), getattr(self, "sse", None)):
            if c is not None:
                await c.aclose()
        if self.cluster is None or self.stopped:
            return
        self.stopped = True
        try:
            await asyncio.to_thread(self.cluster.stop)
        finally:
            await asyncio.to_thread(delete_queue, self.cluster.env["CELERY_QUEUE"])

    async def restart(self) -> None:
        raise NotImplementedError("the scaled-out deployment is started once")


def delete_queue(name: str) -> None:
    """The cluster's private Celery queue, which RabbitMQ keeps (durable) after its consumers left."""
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(name)
    except Exception as exc:  # a leftover queue is no reason to lose the run's figures
        print(f"WARNING: RabbitMQ queue {name} not deleted: {type(exc).__name__}: {exc}", file=sys.stderr)


async def phase_both(both: ClusterServer, agent_id: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """phase_ours against the scaled-out deployment; server CPU is the web's plus the workers'.

    Each level also gets the web process's and the workers' shares of it: with a core each, the
    busier side bounds the rate.
    """
    marks: list[list[float]] = []  # measure_levels reads the CPU before and after each level

    def cpu() -> float:
        marks.append(both.cpu_by_process())
        return sum(marks[-1])

    out = await measure_levels(ours_one(both, agent_id, "plain", PLAIN_CHUNKS), cfg, cpu)
    assert len(marks) == 4, f"expected CPU read before and after c1 and c{CONC}, got {len(marks)} reads"
    for n, conc in enumerate((1, CONC)):
        level, before, after = out[f"c{conc}"], marks[2 * n], marks[2 * n + 1]
        k = 1000 / max(level["runs"], 1)
        level["web_cpu_ms_per_run"] = round((after[0] - before[0]) * k, 2)
        level["workers_cpu_ms_per_run"] = round((sum(after[1:]) - sum(before[1:])) * k, 2)
    return out


# ------------------------------------------------------------------------------------------------
# Rounds, verdicts, table


def config(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return {"warmup": 4, "c1_runs": 6, "c32_runs": 64, "budget": 10.0, "chunk_runs": 3,
                "platform": [(CONC, 64)], "stop_runs": 1, "stop_burst": CONC, "capacity_tasks": 100,
                "capacity_creators": 16, "capacity_settle_s": 60.0, "capacity_plateau_s": 1.0,
                "capacity_idle_window_s": 3.0, "capacity_sample_s": 1.0, **CAPACITY_MODEL, "profile": None}  # fmt: skip
    return {"warmup": 8, "c1_runs": 30, "c32_runs": 640, "budget": 45.0, "chunk_runs": 15,
            "platform": [(CONC, 1600)], "stop_runs": 5, "stop_burst": CONC,
            "capacity_tasks": args.capacity_tasks, "capacity_creators": 32, "capacity_settle_s": 300.0,
            "capacity_plateau_s": 3.0, "capacity_idle_window_s": 10.0, "capacity_sample_s": 3.0,
            **CAPACITY_MODEL, "profile": None}  # fmt: skip


def med(values: list[float | None]) -> tuple[float | None, str]:
    """Median and a printable range of a round's values."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, "-"
    m = statistics.median(xs)
    rng = f" ({min(xs):g} to {max(xs):g})" if len(xs) > 1 else ""
    return m, f"{round(m, 4):g}{rng}"


def get(rounds: list[dict[str, Any]], *path: str) -> list[Any]:
    out = []
    for r in rounds:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        out.append(v)
    return out


def ratio(a: list[Any], b: list[Any], invert: bool = False) -> list[float | None]:
    return [
        None
        if x is None or y in (None, 0) or (invert and x == 0)
        else round((y / x) if invert else (x / y), 3)
        for x, y in zip(a, b, strict=True)
    ]


def difference(a: list[Any], b: list[Any]) -> list[float | None]:
    return [None if x is None or y is None else round(x - y, 3) for x, y in zip(a, b, strict=True)]


def verdicts(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rounds = res["rounds"]
    rows: list[tuple[str, str, str, bool | None]] = []
    workers = res.get("config", {}).get("both_workers", 1)
    scaled = f"this project, scaled out (1 web + {workers} worker{'s' if workers > 1 else ''})"

    def show(what: str, vals: list[Any], unit: str = "", target: str = "(reference)") -> None:
        if any(v is not None for v in vals):
            rows.append((what, med(vals)[1] + unit, target, None))

    def show2(what: str, a: list[Any], b: list[Any], unit: str) -> None:
        if any(v is not None for v in (*a, *b)):
            rows.append((what, f"{med(a)[1]} / {med(b)[1]}{unit}", "(reference)", None))

    def check(what: str, vals: list[Any], target: str, ok: Callable[[float], bool], unit: str = "") -> None:
        m, text = med(vals)
        if m is not None:
            rows.append((what, text + unit, target, ok(m)))

    for name, label in (("langgraph", "LangGraph server (langgraph dev)"), ("langchain", "LangChain agent in-process"),
                        ("pydantic", "pydantic-ai alone in-process"),
                        ("library", "pydantic-ai as our runtime drives it, in-process"),
                        ("ours", "this project, embedded default"),
                        ("both", scaled)):  # fmt: skip
        show2(
            f"{label}: c1 p50 / p95",
            get(rounds, name, "c1", "p50_ms"),
            get(rounds, name, "c1", "p95_ms"),
            " ms",
        )
        show(f"{label}: c{CONC} runs/s", get(rounds, name, f"c{CONC}", "per_s"))
    for name, label, key in (("langgraph", "LangGraph server process", "server_cpu_ms_per_run"),
                             ("langchain", "LangChain in-process", "cpu_ms_per_run"),
                             ("pydantic", "pydantic-ai in-process", "cpu_ms_per_run"),
                             ("library", "pydantic-ai as our runtime drives it", "cpu_ms_per_run"),
                             ("ours", "our server process", "server_cpu_ms_per_run"),
                             ("both", "our web + worker processes (scaled out)", "server_cpu_ms_per_run")):  # fmt: skip
        show(f"CPU per run at c{CONC}: {label}", get(rounds, name, f"c{CONC}", key), " ms")
    show2(f"context switches per run at c{CONC}: LangGraph server / our server",
          get(rounds, "langgraph", f"c{CONC}", "server_switches_per_run"),
          get(rounds, "ours", f"c{CONC}", "server_switches_per_run"), "")  # fmt: skip
    show2(f"CPU per run at c{CONC}, scaled out: web / workers", get(rounds, "both", f"c{CONC}", "web_cpu_ms_per_run"),
          get(rounds, "both", f"c{CONC}", "workers_cpu_ms_per_run"), " ms")  # fmt: skip
    # What each server spends per run beyond its own library's run (the library measured alone).
    cpu = {n: get(rounds, n, f"c{CONC}", k) for n, k in (("langgraph", "server_cpu_ms_per_run"),
           ("langchain", "cpu_ms_per_run"), ("library", "cpu_ms_per_run"), ("ours", "server_cpu_ms_per_run"))}  # fmt: skip
    show(f"CPU per run at c{CONC} beyond the library: LangGraph server - LangChain in-process",
         difference(cpu["langgraph"], cpu["langchain"]), " ms")  # fmt: skip
    show(f"CPU per run at c{CONC} beyond the library: our server - our runtime's pydantic-ai",
         difference(cpu["ours"], cpu["library"]), " ms")  # fmt: skip
    show(f"CPU per run at c{CONC}: our runtime's pydantic-ai / LangGraph's whole server",
         ratio(cpu["library"], cpu["langgraph"]), "x")  # fmt: skip
    ours32, lg32, pa32 = (get(rounds, n, f"c{CONC}", "per_s") for n in ("ours", "langgraph", "pydantic"))
    ours1, lg1, pa1 = (get(rounds, n, "c1", "p50_ms") for n in ("ours", "langgraph", "pydantic"))
    check(f"c{CONC}: ours / LangGraph runs/s", ratio(ours32, lg32), ">= 1x", lambda m: m >= 1.0, "x")
    check(f"c{CONC}: ours / pydantic-ai runs/s", ratio(ours32, pa32), ">= 0.75x", lambda m: m >= 0.75, "x")
    check("c1 p50: LangGraph / ours", ratio(ours1, lg1, invert=True), ">= 20x", lambda m: m >= 20, "x")
    check("c1 p50: ours / pydantic-ai", ratio(ours1, pa1), "<= 3x", lambda m: m <= 3, "x")
    both32, both1 = get(rounds, "both", f"c{CONC}", "per_s"), get(rounds, "both", "c1", "p50_ms")
    check(f"c{CONC}: scaled out / LangGraph runs/s", ratio(both32, lg32), ">= 2x LangGraph (aim)",
          lambda m: m >= 2.0, "x")  # fmt: skip
    show("c1 p50: LangGraph / scaled out", ratio(both1, lg1, invert=True), "x")
    show(f"c{CONC}: scaled out / embedded default runs/s", ratio(both32, ours32), "x")
    ours_c, pa_c = (
        get(rounds, "chunk", "ours", "cpu_ms_per_chunk"),
        get(rounds, "chunk", "pydantic", "cpu_ms_per_chunk"),
    )
    show("CPU per chunk (500-chunk answer): ours", ours_c, " ms")
    show("CPU per chunk (500-chunk answer): pydantic-ai alone", pa_c, " ms")
    diff = [None if a is None or b is None else round(a - b, 4) for a, b in zip(ours_c, pa_c, strict=True)]
    check("CPU per chunk: ours - pydantic-ai", diff, "<= +0.1 ms", lambda m: m <= 0.1, " ms")
    new, old = get(rounds, "platform", "this", "per_s"), get(rounds, "platform", "base", "per_s")
    show(f"platform c{CONC} runs/s: this tree", new)
    show(f"platform c{CONC} runs/s: {BASE_COMMIT}", old)
    check(f"platform c{CONC}: this tree / {BASE_COMMIT}", ratio(new, old), ">= 3x", lambda m: m >= 3, "x")
    s = res.get("stop")
    if s and "error" not in s:
        b = s[f"burst{CONC}"]
        rows.append((f"stop, {CONC} at once: DELETE p95", f"{b['delete_p95_ms']} ms", "(reference)", None))
        rows.append((f"stop, {CONC} at once: model connection closed p95", f"{b['disconnect_p95_ms']} ms",
                     "<= 500 ms", b["disconnect_p95_ms"] <= 500))  # fmt: skip
    c = res.get("capacity")
    if c and "error" not in c:
        n = c["tasks"]
        rows.append((f"capacity: tasks in their model call at once (of {n})", f"{c['peak_model_requests_waiting']}",
                     f"= {n}" + ("" if n >= 2000 else " (2,000 in the full run)"),
                     c["peak_model_requests_waiting"] >= n))  # fmt: skip
        rows.append(("capacity: server VmHWM / RSS on the plateau", f"{c['hwm_mb']} / {c['rss_plateau_mb']} MB",
                     "<= 1024 MB", c["hwm_mb"] <= 1024))  # fmt: skip
        rows.append(("capacity: server CPU while they wait", f"{c['plateau_idle_cpu_pct']} % of a core", "< 10 %",
                     c["plateau_idle_cpu_pct"] < 10))  # fmt: skip
    return rows


def failures(res: dict[str, Any]) -> list[str]:
    """Failed runs anywhere: wrong answers, lost or repeated events, tasks not completed."""
    out = []
    for i, r in enumerate(res["rounds"]):
        for name in ("langgraph", "langchain", "pydantic", "library", "ours", "both"):
            blocks = r.get(name) or {}
            if blocks.get("errors"):
                out.append(
                    f"round {i + 1} {name}: {blocks['errors']} failed, e.g. {blocks['error_samples'][:1]}"
                )
            for lvl, level in blocks.items():
                if isinstance(level, dict) and level.get("errors"):
                    out.append(
                        f"round {i + 1} {name} {lvl}: {level['errors']} failed, e.g. {level['error_samples'][:1]}"
                    )
        for side, block in (r.get("chunk") or {}).items():
            if block.get("errors"):
                out.append(
                    f"round {i + 1} chunk {side}: {block['errors']} failed, e.g. {block['error_samples'][:1]}"
                )
        for side, block in (r.get("platform") or {}).items():
            if block.get("errors"):
                out.append(
                    f"round {i + 1} platform {side}: {block['errors']} failed, e.g. {block['error_samples'][:1]}"
                )
    for name in ("stop", "capacity"):
        if "error" in (res.get(name) or {}):
            out.append(f"{name}: {res[name]['error']}")
    cap = res.get("capacity") or {}
    if cap.get("error_count"):
        out.append(f"capacity: {cap['error_count']} tasks failed, e.g. {cap['errors'][:1]}")
    return out


# ------------------------------------------------------------------------------------------------
# Main


def base_tree() -> Path:
    """The worktree of BASE_COMMIT (added once, reused)."""
    if not (BASE_TREE / "manage.py").exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(BASE_TREE), BASE_COMMIT], cwd=ROOT, check=True
        )
    return BASE_TREE


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config(args)
    only = set(args.only.split(",")) if args.only else set(PHASES)
    if unknown := only - set(PHASES):
        raise SystemExit(f"unknown phases {sorted(unknown)}; known: {','.join(PHASES)}")
    if "both" in only:
        cfg["both_workers"], cfg["both_worker_concurrency"] = args.both_workers, BOTH_WORKER_CONCURRENCY
    # every server started below inherits it: c32 followers and 2,000 capacity followers on one key
    os.environ["SSE_MAX_STREAMS_PER_KEY"] = str(max(256, cfg["capacity_tasks"] * 2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    venv = langgraph_venv() if only & {"langgraph", "langchain"} else LG_VENV
    scfg = ServicesConfig(
        agent_chunks=PLAIN_CHUNKS,
        long_chunks=LONG_CHUNKS,
        capacity_delay_first=cfg["capacity_delay_first"],
        capacity_chunks=cfg["capacity_chunks"],
        capacity_delay_chunk=cfg["capacity_delay_chunk"],
    )
    services = await asyncio.to_thread(Services, scfg)
    pinned = ("langgraph", "langchain", "openai==", "uvicorn", "starlette")
    requirements = (APP / "requirements.txt").read_text().splitlines()
    res: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "code": code_version(),
        "base_commit": BASE_COMMIT,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg,
        "langgraph_versions": [line for line in requirements if line.startswith(pinned)],
        "rounds": [],
    }
    lg: LangGraphServer | None = None
    srv: Server | None = None
    base: Server | None = None
    both: ClusterServer | None = None
    t_all = time.perf_counter()
    path = RESULTS / f"compare{'-quick' if args.quick else ''}-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save() -> None:
        """Written after every phase too, so a long run that breaks later keeps what it measured."""
        path.write_text(json.dumps(res, indent=2) + "\n")

    try:
        if "langgraph" in only:
            print("-- starting langgraph dev ...", flush=True)
            lg = LangGraphServer(venv, services.model_url, workdir)
            await asyncio.to_thread(lg.start)
        if only & {"ours", "chunk", "platform", "stop"}:
            (workdir / "ours").mkdir()
            srv = Server(workdir / "ours", services)
            await srv.start()
        if "platform" in only:
            (workdir / "base").mkdir()
            base = Server(workdir / "base", services, root=await asyncio.to_thread(base_tree))
            await base.start()
        if "both" in only:
            print(f"-- starting the scaled-out deployment (1 web + {args.both_workers} worker processes) ...",
                  flush=True)  # fmt: skip
            (workdir / "both").mkdir()
            both = ClusterServer(workdir / "both", services, workers=args.both_workers)
            await both.start()
            res["both_started_in_s"] = both.started_in_s
            print(f"   started in {both.started_in_s} s", flush=True)
        agent_mcp = (await srv.builtin_agent("Compare", graph=mcp_graph(srv)))["id"] if srv else ""
        agent_both = (await both.builtin_agent("Compare", graph=mcp_graph(both)))["id"] if both else ""
        agent_plain = (await srv.builtin_agent("Compare long"))["id"] if srv else ""
        for i in range(args.runs):
            rnd: dict[str, Any] = {}
            res["rounds"].append(rnd)

            async def step(
                name: str, fn: Callable[[], Awaitable[Any]], _rnd: dict[str, Any] = rnd, _i: int = i
            ) -> None:
                print(f"-- round {_i + 1}/{args.runs}: {name} ...", flush=True)
                t = time.perf_counter()
                _rnd[name] = await fn()
                save()
                print(f"   {name} done in {time.perf_counter() - t:.1f} s", flush=True)

            if lg is not None:
                await step("langgraph", lambda: phase_langgraph(lg, cfg))
            if "langchain" in only:
                await step("langchain", lambda: phase_langchain(venv, services.model_url, cfg, workdir))
            if "pydantic" in only:
                await step("pydantic", lambda: phase_pydantic(services.model_url, cfg))
            if "library" in only:
                await step("library", lambda: phase_pydantic(services.model_url, cfg, lean=True))
            if "ours" in only:
                await step("ours", lambda: phase_ours(srv, agent_mcp, cfg))
            if both is not None:
                await step("both", lambda: phase_both(both, agent_both, cfg))
            if "chunk" in only:

                async def chunk() -> dict[str, Any]:
                    ours = await phase_chunk_ours(srv, agent_plain, cfg)
                    pa = await phase_pydantic(services.model_url, cfg, mode="long")
                    pa1 = pa["c1"]
                    pa1["cpu_ms_per_chunk"] = round(pa1["cpu_ms_per_run"] / LONG_CHUNKS, 4)
                    pa1["errors"], pa1["error_samples"] = pa["errors"], pa["error_samples"]
                    return {"ours": ours, "pydantic": pa1}

                await step("chunk", chunk)
            if "platform" in only:

                async def platform() -> dict[str, Any]:
                    pcfg = {"platform": cfg["platform"], "budget": cfg["budget"], "profile": None}
                    out = {}
                    for side, server in (("this", srv), ("base", base)):
                        level = (await bench_platform(server, pcfg))["levels"][str(CONC)]
                        out[side] = level
                    return out

                await step("platform", platform)
        if "stop" in only:
            print("-- stop ...", flush=True)
            try:
                res["stop"] = await bench_stop(srv, cfg)
            except Exception as exc:  # recorded and failed, so the other phases' figures survive
                res["stop"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            save()
        for server in (lg, base, srv, both):  # capacity gets the machine (and a fresh process) to itself
            if server is not None:
                await (server.stop() if isinstance(server, Server) else asyncio.to_thread(server.stop))
        if "capacity" in only:
            print(f"-- capacity ({cfg['capacity_tasks']} tasks, fresh server) ...", flush=True)
            (workdir / "capacity").mkdir()
            # the worker pool takes WORKER_CONCURRENCY tasks at once (default 1,000): the target is 2,000
            os.environ["WORKER_CONCURRENCY"] = str(max(1000, cfg["capacity_tasks"]))
            cap = Server(workdir / "capacity", services)
            await cap.start()
            try:
                await asyncio.sleep(1.0)
                t = time.perf_counter()
                try:
                    res["capacity"] = await bench_capacity(cap, cfg)
                    res["capacity"].pop("timeline", None)
                except Exception as exc:
                    res["capacity"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"   capacity done in {time.perf_counter() - t:.1f} s", flush=True)
            finally:
                await cap.stop()
    except BaseException:
        if srv is not None:
            print(srv.live.log_text()[-3000:], file=sys.stderr)
        if lg is not None:
            print(lg.log_tail(), file=sys.stderr)
        if both is not None:
            print(both.log_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if lg is not None:
            await asyncio.to_thread(lg.stop)
        for server in (srv, base, both):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()
        await asyncio.to_thread(services.close)
        logs = [(srv, "ours"), (base, "base")]
        res["server_log_errors"] = {
            name: [line for line in s.live.log_text().splitlines() if " ERROR " in line][:10]
            for s, name in logs
            if s is not None
        }
        if both is not None:
            lines = both.log_text().splitlines()
            res["server_log_errors"]["both"] = [
                line for line in lines if " ERROR " in line or "ERROR/" in line
            ][:10]
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    if code_version() != res["code"]:
        res["code_at_end"] = code_version()
        print(f"WARNING: the code changed during the run: {res['code']} -> {res['code_at_end']}")
    rows = verdicts(res)
    res["verdicts"] = [{"what": a, "measured": b, "target": c, "met": d} for a, b, c, d in rows]
    m = res["machine"]
    code = res["code"]
    dirty = f" + {len(code['changed_files'])} changed files" if code["changed_files"] else ""
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}, "
          f"calibration {m['calibration']}")  # fmt: skip
    print(f"commit: {code['commit']}{dirty}; base {BASE_COMMIT}; rounds {args.runs} (median, range)")
    print_table(rows)
    save()
    print(f"results: {path.relative_to(ROOT)}  (total {res['total_s']} s)")
    return res


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def stoppable(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run `coro`, cancelled by SIGTERM or SIGHUP as Ctrl-C cancels it: its `finally` blocks stop
    every server it started, and the process then exits with 128 + the signal's number.

    Why: by default SIGTERM (a `kill`, a CI job's timeout, a closed terminal's SIGHUP) ends the process
    at once, leaving LangGraph's server, our daphne processes and the scaled-out deployment's worker
    and private database behind, each holding its port and memory.
    """
    loop = asyncio.get_running_loop()
    run = asyncio.ensure_future(coro)
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        run.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await run
    except asyncio.CancelledError:
        if received:
            print(f"-- stopped by signal {received[0]}; servers stopped", file=sys.stderr, flush=True)
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts, under 3 minutes")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--runs", type=int, default=1, help="rounds of the compared phases (median, range)")
    parser.add_argument("--capacity-tasks", type=int, default=2000)
    parser.add_argument(
        "--both-workers", type=int, default=1, help="worker processes of the scaled-out phase"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, logs)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    parser.add_argument("--table", metavar="JSON", help="print the table of a saved results file and exit")
    # the pydantic-ai subprocess (this script, run by phase_pydantic)
    parser.add_argument("--pydantic-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-url", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--lean", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--c1", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--c32", type=int, default=320, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pydantic_worker:
        print(json.dumps(asyncio.run(pydantic_worker(args))))
        return
    if args.table:
        print_table(verdicts(json.loads(Path(args.table).read_text())))
        return
    res = asyncio.run(stoppable(main_async(args)))
    failed = failures(res)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    missed = [v["what"] for v in res["verdicts"] if v["met"] is False]
    if failed or (args.strict and missed):
        sys.exit(1)


if __name__ == "__main__":
    main()

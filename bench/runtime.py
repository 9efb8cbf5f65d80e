"""Runtime benchmarks of the embedded default: one daphne process, SQLite, in-process worker.

    .venv/bin/python bench/runtime.py                 # the full run (about 8 minutes)
    .venv/bin/python bench/runtime.py --quick         # the smoke run for CI (< 60 s)
    .venv/bin/python bench/runtime.py --only platform,agent --profile cpu --budget 20

It starts a LiveServer (tests/live.py: daphne on a free port, its own SQLite database) and, in a
child process, the scripted OpenAI-compatible model and the MCP server (bench/services.py), so
their CPU is not the clients'. Everything is measured from outside with real HTTP clients
(httpx.AsyncClient), as users and workers see it:

0. http:     sequential cheap requests (auth only, task status, a 1-event push): the fixed cost of
   one API request, latency and server CPU.
1. platform: an `external` agent's task driven by the benchmark as its worker (create, 4 pushes of
   12 events, PATCH .../update completed) while a separate SSE reader follows it from creation;
   latency is create-sent to task_finished-read-on-SSE, at concurrency 1 and 32.
2. agent:    a builtin agent, the model at zero latency: one MCP `add` call, then a 20-chunk
   answer; create-sent to task_finished-on-SSE, at concurrency 1, 8 and 32.
   floor:    the same run with pydantic-ai alone in this process (no server): what the libraries
   cost, with per-run clients as the runtime builds them and with shared ones.
3. capacity: on a fresh server process, ramp up to N builtin tasks while the model holds every
   call at a gate (a slow model); sample the server's RSS (/proc VmRSS, VmHWM) and the executing
   tasks (the list endpoint); then open the gate (1 s to the first byte, a 20-chunk answer) and
   time the drain.
4. stop:     DELETE on running tasks whose model stream hangs, one at a time and 32 at once: the
   DELETE round trip and the time until the model sees its connection closed.

A table is printed; results go to bench/results/runtime[-quick]-<time>.json and -latest.json
(profiled or --tag'ged runs get their own name). --profile {gil,cpu,wall} runs py-spy on the
server during each measured phase: bench/results/profile-<phase>.txt (collapsed stacks) and
profile-<phase>.top.txt. The exit status is 1 when runs failed (errors, wrong answers, lost
events), not when targets are missed (unless --strict): numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.services import MCP_TOKEN, Services, ServicesConfig, agent_answer  # noqa: E402
from tests.live import LiveServer, server_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"


# ------------------------------------------------------------------------------------------------
# Small helpers


def pct(values: list[float], p: float) -> float | None:
    """The p-th percentile (0-100), linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def latency_stats(latencies: list[float], wall: float) -> dict[str, Any]:
    return {
        "runs": len(latencies),
        "wall_s": round(wall, 3),
        "per_s": round(len(latencies) / wall, 1) if wall > 0 else None,
        "p50_ms": ms(pct(latencies, 50)),
        "p95_ms": ms(pct(latencies, 95)),
        "p99_ms": ms(pct(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / Threads of a process, in kB (threads as a count)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM", "Threads"}:
                out[name] = int(value.split()[0])
    return out


def context_switches(pid: int) -> int:
    """Context switches (voluntary and not) of all of a process's threads so far: its threads taking
    turns at the GIL show here, and in the kernel's share of its CPU, not in a Python profile.
    A thread that ends takes its count with it: over a level in which threads end, it undercounts."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as fh:
                for line in fh:
                    name, _, value = line.partition(":")
                    if name.endswith("ctxt_switches"):  # voluntary_ and nonvoluntary_
                        total += int(value)
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_run(srv: Server, before: tuple[float, float, float], runs: int) -> dict[str, float]:
    """CPU ms per run of the server, of this process (the clients) and of the model + MCP process."""
    server, clients, services = before
    k = 1000 / max(runs, 1)
    return {
        "server_cpu_ms_per_run": round((cpu_seconds(srv.pid) - server) * k, 1),
        "client_cpu_ms_per_run": round((time.process_time() - clients) * k, 1),
        "services_cpu_ms_per_run": round((cpu_seconds(srv.services.pid) - services) * k, 1),
    }


def calibration() -> dict[str, float]:
    """How fast this machine runs plain Python (to compare results across machines)."""
    import timeit

    loop = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000
    dumps = min(timeit.repeat("dumps(d)", setup="from json import dumps; d={'a': [1, 2, 3] * 10, 'b': 'x' * 100}",
                              number=5000, repeat=5)) / 5000  # fmt: skip
    return {"sum_range_1000_us": round(loop * 1e6, 1), "json_dumps_small_us": round(dumps * 1e6, 1)}


def code_version() -> dict[str, Any]:
    """The commit measured, and the files that differ from it (the benchmark's own excluded)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return out.stdout.rstrip()

    status = git("status", "--porcelain").splitlines()  # "XY path": two status letters, a space
    ours = ("bench/", "docs/benchmarks.md")
    changed = [line[3:] for line in status if line[3:] and not line[3:].startswith(ours)]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "changed_files": changed}


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "calibration": calibration(),
    }


PROFILE_FLAGS = {
    "gil": ["--gil"],  # only the thread holding the GIL: where Python CPU goes
    "cpu": [],  # every thread that is running (on CPU or in a syscall)
    "wall": ["--idle", "--threads"],  # every thread, waiting included: where the time goes
}


class Profiler:
    """py-spy on the server process for the length of a `with` block (if --profile and py-spy exist)."""

    def __init__(self, mode: str | None, pid: int, name: str) -> None:
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.enabled = bool(mode) and Path(self.exe).exists()
        self.mode = mode
        self.pid, self.name = pid, name
        self.out = RESULTS / f"profile-{name}.txt"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Profiler:
        if self.enabled:
            self.proc = subprocess.Popen(
                [self.exe, "record", "--pid", str(self.pid), "--rate", "250",
                 "--format", "raw", "--output", str(self.out), *PROFILE_FLAGS[self.mode or "gil"]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            summarize_profile(self.out)


def summarize_profile(path: Path, top: int = 30) -> None:
    """Write <profile>.top.txt: the frames with the most samples, inclusive and self."""
    if not path.exists():
        return
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return
    lines = [f"{total} samples in {path.name}", "", "inclusive:"]
    lines += [f"{100 * n / total:6.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * n / total:6.1f}%  {f}" for f, n in own.most_common(top)]
    path.with_suffix(".top.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# HTTP side


def client(base: str, key: str, *, timeout: float = 120) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base,
        headers={"x-api-key": key},
        timeout=timeout,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )


@dataclass
class Followed:
    finished_at: float | None = None  # perf_counter() when task_finished was read
    first_chunk_at: float | None = None
    events: int = 0
    types: Counter = field(default_factory=Counter)
    final: dict[str, Any] | None = None


async def follow(sse: httpx.AsyncClient, task_id: str) -> Followed:
    """Read the task's SSE stream until task_finished (the server closes it right after)."""
    out = Followed()
    etype = ""
    async with sse.stream("GET", f"/agent-execution/{task_id}/events") as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                etype = line[7:]
            elif line.startswith("data: "):
                out.events += 1
                out.types[etype] += 1
                if etype == "chunk" and out.first_chunk_at is None:
                    out.first_chunk_at = time.perf_counter()
                if etype == "task_finished":
                    out.finished_at = time.perf_counter()
                    out.final = json.loads(line[6:])["data"]
                    break
    return out


async def run_at(
    concurrency: int, runs: int, one, budget: float | None = None, errors: list[str] | None = None
) -> tuple[list[Any], float]:
    """Call `one(i)` `runs` times with `concurrency` in flight; (results, wall seconds).

    With a `budget` (seconds), no new run starts once it is spent (the quick mode's time bound).
    With an `errors` list, a failed run is recorded there instead of ending the benchmark.
    """
    results: list[Any] = []
    counter = iter(range(runs))
    stop_at = None if budget is None else time.perf_counter() + budget

    async def lane() -> None:
        for i in counter:
            if stop_at is not None and time.perf_counter() > stop_at:
                return
            if errors is None:
                results.append(await one(i))
                continue
            try:
                results.append(await one(i))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return results, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# 0. The fixed cost of one API request (what every benchmark above pays per HTTP call)


async def bench_http(srv: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    """Sequential requests to cheap endpoints: latency and server CPU per request."""
    agent = await srv.create_agent({"name": f"Http {uuid.uuid4().hex[:6]}", "framework": "external"})
    r = await srv.api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": "http benchmark"}})
    task_id = r.json()["id"]
    calls = {
        "GET /api/metadata/default_llm_extra_headers (auth only)": lambda: srv.api.get(
            "/metadata/default_llm_extra_headers"
        ),
        "GET /api/agent-execution/{id}/status": lambda: srv.api.get(f"/agent-execution/{task_id}/status"),
        "POST .../events/push (1 chunk)": lambda: srv.api.post(
            f"/agent-execution/{task_id}/events/push", json=[{"type": "chunk", "data": "x"}]
        ),
    }
    out: dict[str, Any] = {}
    for name, fn in calls.items():
        for _ in range(10):
            (await fn()).raise_for_status()
        cpu0 = cpu_seconds(srv.pid)
        latencies = []
        for _ in range(cfg["http_requests"]):
            t = time.perf_counter()
            (await fn()).raise_for_status()
            latencies.append(time.perf_counter() - t)
        out[name] = {
            "requests": len(latencies),
            "p50_ms": ms(pct(latencies, 50)),
            "p95_ms": ms(pct(latencies, 95)),
            "server_cpu_ms_per_request": round((cpu_seconds(srv.pid) - cpu0) / len(latencies) * 1000, 2),
        }
    return out


# ------------------------------------------------------------------------------------------------
# 1. Platform overhead: an external agent, the benchmark as its worker


def pushed_batches() -> list[list[dict[str, Any]]]:
    """48 events in 4 pushes of 12: a tool call (request + result) and 10 chunks each."""
    batches = []
    for b in range(4):
        call = {"request_id": f"r{b}", "tool_call_id": f"c{b}", "tool_name": "lookup", "payload": {"q": b}}
        batch = [
            {"type": "tool_call_request", "data": call},
            {"type": "tool_call_result", "data": {**call, "result": {"rows": b}, "is_error": False}},
        ]
        batch += [{"type": "chunk", "data": f"part {b}.{i} "} for i in range(10)]
        batches.append(batch)
    return batches


async def bench_platform(srv: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    agent = await srv.create_agent({"name": f"External {uuid.uuid4().hex[:6]}", "framework": "external"})
    batches = pushed_batches()
    expected_events = 1 + sum(len(b) for b in batches) + 2  # task_created, pushed, task_updated + finished

    async def one(_i: int) -> dict[str, float]:
        api, sse = srv.api, srv.sse
        t0 = time.perf_counter()
        r = await api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": "platform benchmark"}, "events_streaming": True},
        )
        r.raise_for_status()
        task_id = r.json()["id"]
        t_created = time.perf_counter()
        reader = asyncio.create_task(follow(sse, task_id))
        try:
            for batch in batches:
                (await api.post(f"/agent-execution/{task_id}/events/push", json=batch)).raise_for_status()
            t_pushed = time.perf_counter()
            r = await api.patch(
                f"/agent-execution/{task_id}/update", json={"status": "completed", "result": "ok"}
            )
            r.raise_for_status()
            t_updated = time.perf_counter()
            seen = await reader
        finally:
            reader.cancel()
        if seen.final is None or seen.final["status"] != "completed":
            raise RuntimeError(f"task {task_id} did not finish as completed: {seen.final}")
        if seen.events != expected_events or seen.types["chunk"] != 40:
            raise RuntimeError(f"task {task_id}: SSE delivered {seen.events} events {dict(seen.types)}")
        return {
            "latency": seen.finished_at - t0,
            "create": t_created - t0,
            "push": (t_pushed - t_created) / len(batches),
            "update": t_updated - t_pushed,
            "sse_lag": seen.finished_at - t_updated,
            "events": seen.events,
        }

    await run_at(4, 20, one)  # warm-up
    out: dict[str, Any] = {"agent": "external", "events_per_run": None, "levels": {}}
    for conc, runs in cfg["platform"]:
        cpu0 = (cpu_seconds(srv.pid), time.process_time(), cpu_seconds(srv.services.pid))
        errors: list[str] = []
        with Profiler(cfg["profile"], srv.pid, f"platform-c{conc}"):
            results, wall = await run_at(conc, runs, one, cfg["budget"], errors)
        level = latency_stats([r["latency"] for r in results], wall)
        level["errors"], level["error_samples"] = len(errors), errors[:5]
        level.update(cpu_per_run(srv, cpu0, len(results)))
        for part in ("create", "push", "update", "sse_lag"):
            level[f"{part}_p50_ms"] = ms(pct([r[part] for r in results], 50))
        out["events_per_run"] = expected_events
        out["levels"][str(conc)] = level
    return out


# ------------------------------------------------------------------------------------------------
# 2. Agent run: builtin agent, zero-latency model, one MCP tool call, a 20-chunk answer


async def bench_agent(srv: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    graph = [
        {
            "id": "gi-tools",
            "type": "mcp",
            "name": "Tools",
            "settings": {
                "mcp_settings": {
                    "url": srv.services.mcp_url,
                    "transport": "streamable-http",
                    "auth_type": "api_key",
                    "api_key": MCP_TOKEN,
                }
            },
        }
    ]
    agent = await srv.builtin_agent("Agent bench", graph=graph)
    expected = agent_answer(20)

    async def one(_i: int) -> dict[str, float]:
        tag = f"[bench:agent:{uuid.uuid4().hex[:12]}]"
        t0 = time.perf_counter()
        r = await srv.api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"{tag} What is 2 + 3?"}, "events_streaming": True},
        )
        r.raise_for_status()
        task_id = r.json()["id"]
        t_created = time.perf_counter()
        seen = await follow(srv.sse, task_id)
        final = seen.final or {}
        if final.get("status") != "completed" or final.get("result") != expected:
            raise RuntimeError(f"task {task_id}: {final.get('status')}: {final.get('result')!r}")
        if seen.types["tool_call_result"] != 1:
            raise RuntimeError(f"task {task_id}: no MCP tool call in its events {dict(seen.types)}")
        return {
            "latency": seen.finished_at - t0,
            "create": t_created - t0,
            "first_chunk": (seen.first_chunk_at or seen.finished_at) - t0,
            "events": seen.events,
            "chunks": seen.types["chunk"],
        }

    await run_at(2, 6, one)  # warm-up: the runtime's imports, the first MCP session
    out: dict[str, Any] = {"agent": "builtin + MCP add + 20-chunk answer", "levels": {}}
    for conc, runs in cfg["agent"]:
        cpu0 = (cpu_seconds(srv.pid), time.process_time(), cpu_seconds(srv.services.pid))
        errors: list[str] = []
        with Profiler(cfg["profile"], srv.pid, f"agent-c{conc}"):
            results, wall = await run_at(conc, runs, one, cfg["budget"], errors)
        level = latency_stats([r["latency"] for r in results], wall)
        level["errors"], level["error_samples"] = len(errors), errors[:5]
        level.update(cpu_per_run(srv, cpu0, len(results)))
        level["create_p50_ms"] = ms(pct([r["create"] for r in results], 50))
        level["first_chunk_p50_ms"] = ms(pct([r["first_chunk"] for r in results], 50))
        level["events_per_run_p50"] = pct([r["events"] for r in results], 50)
        level["chunk_events_per_run_p50"] = pct([r["chunks"] for r in results], 50)
        out["levels"][str(conc)] = level
    stats = await asyncio.to_thread(srv.services.call, "stats")
    out["model_errors"] = stats["model_errors"]
    return out


# ------------------------------------------------------------------------------------------------
# 2b. Library floor: the same agent run with pydantic-ai alone, in this process, no server


async def bench_floor(srv: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    """What one agent run costs in pydantic-ai + openai + the MCP client alone (no Django, no DB).

    `per_run_clients` builds the clients as tasks_app/runtime/llm.py and runner.py do (a new
    AsyncOpenAI client and MCP HTTP client per run, each with its own TLS context); `shared_clients`
    reuses one AsyncOpenAI client and one TLS context. The gap is what sharing them would save.
    """
    import ssl

    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
    from pydantic_ai.run import AgentRunResultEvent

    expected = agent_answer(20)
    model_url, mcp_url = srv.services.model_url, srv.services.mcp_url
    shared_client = AsyncOpenAI(api_key="sk-bench-model", base_url=model_url, max_retries=2, timeout=120)
    shared_tls = ssl.create_default_context()

    async def one(shared: bool) -> dict[str, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        client_ = (
            shared_client
            if shared
            else AsyncOpenAI(api_key="sk-bench-model", base_url=model_url, max_retries=2, timeout=120)
        )
        model = OpenAIChatModel(
            "scripted", provider=OpenAICompatibleProvider("openai_compatible", openai_client=client_)
        )
        toolset = MCPToolset(
            mcp_url,
            id="mcp-tools",
            auth=MCP_TOKEN,
            tool_error_behavior="failed",
            verify=shared_tls if shared else None,
        )
        agent = Agent(model, instructions="Answer briefly.")
        async with toolset:
            prompt = f"[bench:agent:floor-{uuid.uuid4().hex[:12]}] What is 2 + 3?"
            async with agent.run_stream_events(prompt, toolsets=[toolset]) as stream:
                output = None
                async for event in stream:
                    if isinstance(event, AgentRunResultEvent):
                        output = event.result.output
        if output != expected:
            raise RuntimeError(f"library run answered {output!r}")
        return {"latency": time.perf_counter() - t0, "cpu": time.process_time() - c0}

    out: dict[str, Any] = {}
    for name, shared in (("per_run_clients", False), ("shared_clients", True)):
        for _ in range(3):
            await one(shared)  # warm-up
        services0 = cpu_seconds(srv.services.pid)
        rows = [await one(shared) for _ in range(cfg["floor_runs"])]
        out[name] = {
            "runs": len(rows),
            "p50_ms": ms(pct([r["latency"] for r in rows], 50)),
            "cpu_ms_per_run": ms(pct([r["cpu"] for r in rows], 50)),
            "services_cpu_ms_per_run": round(
                (cpu_seconds(srv.services.pid) - services0) / len(rows) * 1000, 1
            ),
        }
    await shared_client.close()
    return out


# ------------------------------------------------------------------------------------------------
# 3. Capacity: many slow tasks at once in the one server process


async def bench_capacity(srv: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    n, creators = cfg["capacity_tasks"], cfg["capacity_creators"]
    call = srv.services.call
    agent = await srv.builtin_agent("Capacity bench")
    # warm-up: the runtime's lazy imports (pydantic-ai, openai) belong to the idle baseline
    for i in range(3):
        r = await srv.api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"[bench:warm:{i}] hi"}, "events_streaming": True},
        )
        await follow(srv.sse, r.json()["id"])
    await asyncio.to_thread(call, "reset")
    await asyncio.sleep(1.0)
    status0 = proc_status(srv.pid)
    mem: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    finished: dict[str, float] = {}
    errors: list[str] = []
    stop_sampling = asyncio.Event()
    listing = f"/agent-execution/executions/history/{agent['id']}"
    t0 = time.perf_counter()

    async def sample_memory() -> None:
        while not stop_sampling.is_set():
            mem.append({"t": time.perf_counter() - t0, **proc_status(srv.pid)})
            await asyncio.sleep(0.2)

    async def executing_now() -> tuple[int, float]:
        t = time.perf_counter()
        try:
            r = await srv.api.get(listing, params={"status": "executing", "limit": 1000})
            return len(r.json()), time.perf_counter() - t
        except (httpx.HTTPError, ValueError):
            return -1, time.perf_counter() - t

    quiet = asyncio.Event()  # set while the plateau's idle CPU is measured: no list calls then

    async def sample_tasks() -> None:
        while not stop_sampling.is_set():
            if quiet.is_set():
                await asyncio.sleep(0.1)
                continue
            executing, took = await executing_now()
            gated = await asyncio.to_thread(call, "gated")
            timeline.append(
                {
                    "t": round(time.perf_counter() - t0, 2),
                    "executing": executing,
                    "model_waiting": gated,
                    "finished": len(finished),
                    "list_ms": round(took * 1000, 1),
                }
            )
            await asyncio.sleep(cfg["capacity_sample_s"])

    async def create(i: int) -> asyncio.Task:
        tag = f"[bench:capacity:{i}-{uuid.uuid4().hex[:8]}]"
        r = await srv.api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"{tag} go slowly"}, "events_streaming": True},
        )
        r.raise_for_status()
        task_id = r.json()["id"]

        async def watch() -> None:
            try:
                seen = await follow(srv.sse, task_id)
                finished[task_id] = seen.finished_at or time.perf_counter()
                if (seen.final or {}).get("status") != "completed":
                    errors.append(
                        f"{task_id}: {(seen.final or {}).get('status')}: {(seen.final or {}).get('result')}"
                    )
            except Exception as exc:
                errors.append(f"{task_id}: {type(exc).__name__}: {exc}")

        return asyncio.create_task(watch())

    samplers = [asyncio.create_task(sample_memory()), asyncio.create_task(sample_tasks())]
    cpu0 = cpu_seconds(srv.pid)
    prof = cfg["profile"]
    with Profiler(prof, srv.pid, "capacity-ramp"):
        watchers, ramp_s = await run_at(creators, n, create, errors=errors)
        t_ramped = time.perf_counter()
        # every task should now be executing, its model call held at the gate
        deadline = t_ramped + cfg["capacity_settle_s"]
        while time.perf_counter() < deadline:
            if await asyncio.to_thread(call, "gated") >= n:
                break
            await asyncio.sleep(0.2)
        t_all_waiting = time.perf_counter()
    await asyncio.sleep(cfg["capacity_plateau_s"])
    plateau_executing, plateau_list_s = await executing_now()
    plateau_waiting = await asyncio.to_thread(call, "gated")
    plateau_status = proc_status(srv.pid)
    quiet.set()
    await asyncio.sleep(0.5)
    with Profiler(prof, srv.pid, "capacity-idle"):
        cpu_plateau0 = cpu_seconds(srv.pid)
        t_p0 = time.perf_counter()
        await asyncio.sleep(cfg["capacity_idle_window_s"])
        idle_cpu = (cpu_seconds(srv.pid) - cpu_plateau0) / (time.perf_counter() - t_p0)
    quiet.clear()
    with Profiler(prof, srv.pid, "capacity-drain"):
        t_release = time.perf_counter()
        await asyncio.to_thread(call, "release")
        await asyncio.gather(*watchers)
        t_done = time.perf_counter()
    stop_sampling.set()
    await asyncio.gather(*samplers)
    cpu = cpu_seconds(srv.pid) - cpu0
    peak_rss = max((s.get("VmRSS", 0) for s in mem), default=0)
    final_status = proc_status(srv.pid)
    base = status0.get("VmRSS", 0)
    peak_exec = max([plateau_executing] + [s["executing"] for s in timeline])
    return {
        "tasks": n,
        "creators": creators,
        "model": {
            "held_until_release": True,
            "after_release_delay_first_s": cfg["capacity_delay_first"],
            "after_release_chunks": cfg["capacity_chunks"],
            "after_release_delay_chunk_s": cfg["capacity_delay_chunk"],
        },
        "peak_executing": peak_exec,
        "plateau_executing": plateau_executing,
        "plateau_model_requests_waiting": plateau_waiting,
        "peak_model_requests_waiting": max([plateau_waiting] + [s["model_waiting"] for s in timeline]),
        "ramp_s": round(ramp_s, 2),
        "create_rate_per_s": round(n / ramp_s, 1),
        "settle_s": round(t_all_waiting - t_ramped, 2),
        "drain_s": round(t_done - t_release, 2),
        "drain_rate_per_s": round(n / (t_done - t_release), 1),
        "rss_idle_mb": round(base / 1024, 1),
        "rss_plateau_mb": round(plateau_status.get("VmRSS", 0) / 1024, 1),
        "rss_peak_mb": round(peak_rss / 1024, 1),
        "hwm_mb": round(final_status.get("VmHWM", 0) / 1024, 1),
        "rss_per_task_kb": round((plateau_status.get("VmRSS", 0) - base) / max(plateau_executing, 1), 1),
        "threads_peak": max((s.get("Threads", 0) for s in mem), default=0),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_ms_per_task": round(cpu / n * 1000, 1),
        "plateau_idle_cpu_pct": round(idle_cpu * 100, 1),
        "plateau_list_ms": round(plateau_list_s * 1000, 1),
        "errors": errors[:10],
        "error_count": len(errors),
        "timeline": timeline,
    }


# ------------------------------------------------------------------------------------------------
# 4. Stop: DELETE on a task whose model stream hangs


async def bench_stop(srv: Server, cfg: dict[str, Any]) -> dict[str, Any]:
    agent = await srv.builtin_agent("Stop bench")
    call = srv.services.call

    async def start_one() -> tuple[str, str]:
        tag = f"stop:{uuid.uuid4().hex[:12]}"
        r = await srv.api.post(
            f"/agent-execution/{agent['id']}",
            json={"input": {"text": f"[bench:{tag}] work"}, "events_streaming": True},
        )
        r.raise_for_status()
        return r.json()["id"], tag

    async def streaming(tag: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = await asyncio.to_thread(call, "records", tag)
            if recs and recs[0]["chunks_sent"] >= 1:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"the model never streamed for {tag}")

    async def stop_one(task_id: str, tag: str) -> dict[str, float]:
        t0 = time.monotonic()
        r = await srv.api.delete(f"/agent-execution/{task_id}")
        t1 = time.monotonic()
        r.raise_for_status()
        if r.json()["status"] != "stopped":
            raise RuntimeError(f"DELETE answered status {r.json()['status']}")
        deadline = t1 + 30
        while True:
            recs = await asyncio.to_thread(call, "records", tag)
            if recs and recs[0]["disconnected"]:
                return {"delete": t1 - t0, "disconnect": recs[0]["finished_at"] - t0}
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model connection of {tag} was never closed")
            await asyncio.sleep(0.005)

    async def sequential(_i: int) -> dict[str, float]:
        task_id, tag = await start_one()
        await streaming(tag)
        await asyncio.sleep(0.05)  # let the first chunk reach the log
        return await stop_one(task_id, tag)

    await run_at(1, 2, sequential)  # warm-up
    out: dict[str, Any] = {}
    with Profiler(cfg["profile"], srv.pid, "stop"):
        seq, _wall = await run_at(1, cfg["stop_runs"], sequential)
        started = await asyncio.gather(*(start_one() for _ in range(cfg["stop_burst"])))
        await asyncio.gather(*(streaming(tag) for _, tag in started))
        await asyncio.sleep(0.5)
        cpu0 = cpu_seconds(srv.pid)
        burst = await asyncio.gather(*(stop_one(t, tag) for t, tag in started))
        burst_cpu = cpu_seconds(srv.pid) - cpu0
    for name, rows in (("sequential", seq), (f"burst{cfg['stop_burst']}", burst)):
        out[name] = {
            "runs": len(rows),
            "delete_p50_ms": ms(pct([r["delete"] for r in rows], 50)),
            "delete_p95_ms": ms(pct([r["delete"] for r in rows], 95)),
            "disconnect_p50_ms": ms(pct([r["disconnect"] for r in rows], 50)),
            "disconnect_p95_ms": ms(pct([r["disconnect"] for r in rows], 95)),
            "disconnected": len(rows),
        }
    out[f"burst{cfg['stop_burst']}"]["server_cpu_ms_per_stop"] = round(burst_cpu / len(burst) * 1000, 1)
    return out


# ------------------------------------------------------------------------------------------------
# The server under test


# The server's settings for every benchmark (bench/compare.py's scaled-out deployment takes the same,
# so that it differs from the embedded default in its deployment only)
SERVER_ENV = {
    "SSE_KEEPALIVE_SECONDS": "15",  # production defaults, not the tests' short ones
    "STOP_WAIT_SECONDS": "5",
    "MODEL_TIMEOUT_SECONDS": "600",  # capacity holds model calls for as long as the ramp takes
    "SSE_MAX_STREAMS_PER_KEY": "4096",  # one key follows every task (capacity: 2,000 streams)
    "OUTBOUND_ALLOWLIST": "127.0.0.1",  # the scripted model and the MCP server (as tests/live.py)
}


class Server:
    def __init__(self, workdir: Path, services: Services, root: Path = ROOT) -> None:
        self.services = services
        env = server_env(workdir, **SERVER_ENV)
        self.live = LiveServer(workdir, env, root=root)
        self.account = None
        self.api: httpx.AsyncClient
        self.sse: httpx.AsyncClient

    @property
    def pid(self) -> int:
        assert self.live.proc is not None
        return self.live.proc.pid

    async def start(self) -> None:
        await asyncio.to_thread(self.live.start)
        if self.account is None:
            self.account = await asyncio.to_thread(self.live.account, "Bench Org", "bench@bench.test")
        self.api = client(self.live.api, self.account.api_key)
        self.sse = client(self.live.api, self.account.api_key, timeout=300)
        await self.wait_ready()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.api.get("/agents/list")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError("the server did not answer in 30 s")

    async def stop(self) -> None:
        await self.api.aclose()
        await self.sse.aclose()
        await asyncio.to_thread(self.live.stop)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def create_agent(self, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.api.post("/v1/agents", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"creating an agent failed: {r.status_code} {r.text}")
        return r.json()

    async def builtin_agent(self, name: str, **extra: Any) -> dict[str, Any]:
        return await self.create_agent(
            {
                "name": f"{name} {uuid.uuid4().hex[:6]}",
                "framework": "builtin",
                "model_provider": "openai_compatible",
                "model_name": "scripted",
                "model_base_url": self.services.model_url,
                "model_api_key": "sk-bench-model",
                "instructions": "Answer briefly.",
                **extra,
            }
        )


# ------------------------------------------------------------------------------------------------
# Configuration, table, main


def config(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        cfg = {
            "platform": [(1, 10), (32, 32)],
            "agent": [(1, 5), (8, 16)],
            "capacity_tasks": 24,
            "capacity_creators": 8,
            "capacity_settle_s": 20.0,
            "capacity_plateau_s": 1.0,
            "capacity_idle_window_s": 2.0,
            "capacity_sample_s": 1.0,
            "capacity_delay_first": 1.0,
            "capacity_chunks": 20,
            "capacity_delay_chunk": 0.05,
            "floor_runs": 5,
            "http_requests": 30,
            "stop_runs": 3,
            "stop_burst": 4,
        }
    else:
        cfg = {
            "platform": [(1, 200), (32, 3200)],
            "agent": [(1, 60), (8, 400), (32, 800)],
            "capacity_tasks": args.capacity_tasks,
            "capacity_creators": 32,
            "capacity_settle_s": 120.0,
            "capacity_plateau_s": 3.0,
            "capacity_idle_window_s": 10.0,
            "capacity_sample_s": 2.0,
            "capacity_delay_first": 1.0,
            "capacity_chunks": 20,
            "capacity_delay_chunk": 0.05,
            "floor_runs": 30,
            "http_requests": 300,
            "stop_runs": 40,
            "stop_burst": 32,
        }
    cfg["profile"] = args.profile
    cfg["budget"] = args.budget or (4.0 if args.quick else 60.0)
    return cfg


TARGETS = {
    "platform_c1_p50_ms": 50,
    "platform_c32_per_s": 130,  # LangGraph in-memory server: 130-210 runs/s; aiming for 2x (260-420)
    "agent_c1_p50_ms": 40,
    "agent_per_s": 40,
    "capacity_tasks": 500,
    "capacity_rss_mb": 1024,
    "stop_p95_ms": 500,
}


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, target, met) rows."""
    rows: list[tuple[str, str, str, bool | None]] = []
    h = results.get("http")
    if h:
        for name, lv in h.items():
            rows.append((f"request: {name.split(' (')[0]}", f"{lv['p50_ms']} ms, server CPU {lv['server_cpu_ms_per_request']} ms",
                         "(reference)", None))  # fmt: skip
    p = results.get("platform")
    if p:
        c1, c32 = p["levels"].get("1"), p["levels"].get("32")
        if c1:
            rows.append(("platform c1 p50 / p95", f"{c1['p50_ms']} / {c1['p95_ms']} ms", "p50 <= 50 ms",
                         c1["p50_ms"] <= TARGETS["platform_c1_p50_ms"]))  # fmt: skip
        if c32:
            rows.append(("platform c32 runs/s (p50 / p95)", f"{c32['per_s']} ({c32['p50_ms']} / {c32['p95_ms']} ms)",
                         ">= 130-210, aim 2x", c32["per_s"] >= TARGETS["platform_c32_per_s"]))  # fmt: skip
    a = results.get("agent")
    if a:
        c1 = a["levels"].get("1")
        if c1:
            rows.append(("agent c1 p50 / p95", f"{c1['p50_ms']} / {c1['p95_ms']} ms", "p50 <= 40 ms",
                         c1["p50_ms"] <= TARGETS["agent_c1_p50_ms"]))  # fmt: skip
        best = max((lv["per_s"] for lv in a["levels"].values()), default=0)
        for conc, lv in a["levels"].items():
            if conc != "1":
                rows.append((f"agent c{conc} tasks/s (p50 / p95)", f"{lv['per_s']} ({lv['p50_ms']} / {lv['p95_ms']} ms)",
                             ">= 40 tasks/s", lv["per_s"] >= TARGETS["agent_per_s"]))  # fmt: skip
        _ = best
    f = results.get("floor")
    if f:
        for name, lv in f.items():
            rows.append((f"library floor, {name.replace('_', ' ')}: p50 / CPU per run",
                         f"{lv['p50_ms']} / {lv['cpu_ms_per_run']} ms", "(reference)", None))  # fmt: skip
    c = results.get("capacity")
    if c:
        full = c["tasks"] >= TARGETS["capacity_tasks"]  # the quick run checks only that all N ran at once
        rows.append((f"capacity: executing at once (of {c['tasks']})", f"{c['peak_executing']} (model calls waiting {c['peak_model_requests_waiting']})",
                     f">= {TARGETS['capacity_tasks']}" if full else f"= {c['tasks']} (quick)",
                     c["peak_executing"] >= (TARGETS["capacity_tasks"] if full else c["tasks"])))  # fmt: skip
        rows.append(("capacity: RSS idle / at plateau / VmHWM", f"{c['rss_idle_mb']} / {c['rss_plateau_mb']} / {c['hwm_mb']} MB",
                     "<= 1024 MB", c["hwm_mb"] <= TARGETS["capacity_rss_mb"]))  # fmt: skip
        rows.append(("capacity: ramp (creates/s) / drain after release", f"{c['ramp_s']} s ({c['create_rate_per_s']}/s) / {c['drain_s']} s",
                     "-", None))  # fmt: skip
        if c["error_count"]:
            rows.append(("capacity: tasks not completed", str(c["error_count"]), "0", False))
    s = results.get("stop")
    if s:
        for name, lv in s.items():
            rows.append((f"stop {name}: DELETE p50 / p95", f"{lv['delete_p50_ms']} / {lv['delete_p95_ms']} ms",
                         "p95 <= 500 ms", lv["delete_p95_ms"] <= TARGETS["stop_p95_ms"]))  # fmt: skip
            rows.append((f"stop {name}: model disconnect p50 / p95", f"{lv['disconnect_p50_ms']} / {lv['disconnect_p95_ms']} ms",
                         "p95 <= 500 ms", lv["disconnect_p95_ms"] <= TARGETS["stop_p95_ms"]))  # fmt: skip
    return rows


def print_table(rows: list[tuple[str, str, str, bool | None]]) -> None:
    w = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    print()
    print(f"{'benchmark':<{w[0]}}  {'measured':<{w[1]}}  {'target':<{w[2]}}  met")
    print(f"{'-' * w[0]}  {'-' * w[1]}  {'-' * w[2]}  ---")
    for what, measured, target, met in rows:
        mark = "-" if met is None else ("yes" if met else "NO")
        print(f"{what:<{w[0]}}  {measured:<{w[1]}}  {target:<{w[2]}}  {mark}")
    print()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config(args)
    only = (
        set(args.only.split(",")) if args.only else {"http", "platform", "agent", "floor", "capacity", "stop"}
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    services = await asyncio.to_thread(
        Services,
        ServicesConfig(
            agent_chunks=20,
            capacity_delay_first=cfg["capacity_delay_first"],
            capacity_chunks=cfg["capacity_chunks"],
            capacity_delay_chunk=cfg["capacity_delay_chunk"],
        ),
    )
    srv = Server(workdir, services)
    results: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/runtime.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "code": code_version(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "setup": "daphne (embedded default: SQLite WAL, in-process worker, in-memory channel layer); "
        "scripted model + MCP server in a child process; clients: httpx.AsyncClient",
        "config": {k: v for k, v in cfg.items() if k != "profile"},
        "targets": TARGETS,
    }
    t_all = time.perf_counter()
    try:
        await srv.start()
        steps = [
            ("http", bench_http),
            ("platform", bench_platform),
            ("agent", bench_agent),
            ("floor", bench_floor),
            ("stop", bench_stop),
        ]
        for name, fn in steps:
            if name in only:
                print(f"-- {name} ...", flush=True)
                t = time.perf_counter()
                results[name] = await fn(srv, cfg)
                print(f"   {name} done in {time.perf_counter() - t:.1f} s", flush=True)
        if "capacity" in only:
            # a fresh server process, so its RSS and high-water mark belong to this benchmark only
            print("-- capacity ...", flush=True)
            t = time.perf_counter()
            if not args.quick:
                await srv.restart()
            await asyncio.sleep(1.0)
            results["capacity"] = await bench_capacity(srv, cfg)
            print(f"   capacity done in {time.perf_counter() - t:.1f} s", flush=True)
    except BaseException:
        print(srv.live.log_text()[-4000:], file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(Exception):
            await srv.stop()
        await asyncio.to_thread(services.close)
        server_log = srv.live.log_text()
        errors = [line for line in server_log.splitlines() if " ERROR " in line]
        results["server_log_errors"] = errors[:20]
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - t_all, 1)
    if code_version() != results["code"]:  # someone committed or edited while we measured
        results["code_at_end"] = code_version()
        print(f"WARNING: the code changed during the run: {results['code']} -> {results['code_at_end']}")
    rows = verdicts(results)
    results["verdicts"] = [{"what": a, "measured": b, "target": c, "met": d} for a, b, c, d in rows]
    print_table(rows)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = "runtime-quick" if args.quick else "runtime"
    if args.profile or args.tag:  # profiled or experimental runs never replace the plain latest
        name += f"-{args.tag or 'profiled'}"
    results["tag"] = args.tag
    results["profile"] = args.profile
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    code = results["code"]
    dirty = f", {len(code['changed_files'])} files changed" if code["changed_files"] else ""
    print(
        f"results: {path.relative_to(ROOT)}  (commit {code['commit']}{dirty}; total {results['total_s']} s)"
    )
    return results


def failures(results: dict[str, Any]) -> list[str]:
    """Runs that failed outright (not missed targets): what makes the smoke run fail in CI."""
    out = []
    for name in ("platform", "agent"):
        for conc, lv in (results.get(name) or {}).get("levels", {}).items():
            if lv.get("errors"):
                out.append(f"{name} c{conc}: {lv['errors']} failed runs, e.g. {lv['error_samples'][:1]}")
    cap = results.get("capacity") or {}
    if cap.get("error_count"):
        out.append(f"capacity: {cap['error_count']} tasks failed, e.g. {cap['errors'][:1]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 60 s) for CI")
    parser.add_argument("--only", help="comma-separated subset of http,platform,agent,floor,capacity,stop")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="gil",
        choices=sorted(PROFILE_FLAGS),
        help="py-spy the server during each benchmark (gil: Python CPU, the default; cpu; wall)",
    )
    parser.add_argument("--capacity-tasks", type=int, default=500)
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per measured level (default 60, quick 4)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the server's work directory (db, log)")
    parser.add_argument("--tag", help="a label for the results file (experiments)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    failed = failures(results)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    missed = [v["what"] for v in results["verdicts"] if v["met"] is False]
    if failed or (args.strict and missed):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The LangChain agent of agent.py run in this process, no server: the library floor.

    .cache/bench-langgraph/venv/bin/python bench/langgraph_app/inprocess.py \
        --model-url http://127.0.0.1:P/v1 --c1 30 --c32 320 --expected-file answer.txt

Started by bench/compare.py in the LangGraph virtual environment, in its own process (its own GIL,
as the servers have). Each run streams the graph with stream_mode="messages" (the LLM's message
chunks, what the server's `messages-tuple` mode sends), joins the chunks and checks the answer.
Prints one JSON object on stdout: c1 p50/p95 and CPU per run, c32 runs/s, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)


# bench/runtime.py's pct, copied: this script runs in LangGraph's venv, which has none of our modules.
def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def main_async(args: argparse.Namespace, expected: str) -> dict[str, Any]:
    os.environ["BENCH_MODEL_URL"] = args.model_url
    sys.path.insert(0, HERE)
    from agent import build_agent  # needs BENCH_MODEL_URL set first

    graph = build_agent()
    errors: list[str] = []

    async def one() -> float:
        prompt = f"[bench:{args.mode}:lc-{uuid.uuid4().hex[:12]}] What is 2 + 3?"
        t0 = time.perf_counter()
        parts: list[str] = []
        async for chunk, _meta in graph.astream(
            {"messages": [{"role": "user", "content": prompt}]}, stream_mode="messages"
        ):
            if getattr(chunk, "type", "") == "AIMessageChunk" and chunk.content:
                parts.append(chunk.content)
        took = time.perf_counter() - t0
        if "".join(parts) != expected or len(parts) != args.chunks:
            raise RuntimeError(f"answered {len(parts)} chunks: {''.join(parts)[:80]!r}")
        return took

    async def level(conc: int, runs: int) -> tuple[list[float], float, float]:
        todo = iter(range(runs))
        out: list[float] = []

        async def lane() -> None:
            for _ in todo:
                try:
                    out.append(await one())
                except Exception as exc:  # counted, reported: a failed run fails the benchmark
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(conc)))
        return out, time.perf_counter() - t0, time.process_time() - c0

    for _ in range(args.warmup):
        await one()
    result: dict[str, Any] = {}
    lat, wall, cpu = await level(1, args.c1)
    result["c1"] = {
        "runs": len(lat),
        "p50_ms": round(pct(lat, 50) * 1000, 2) if lat else None,
        "p95_ms": round(pct(lat, 95) * 1000, 2) if lat else None,
        "cpu_ms_per_run": round(cpu / max(len(lat), 1) * 1000, 2),
    }
    if args.c32:
        lat, wall, cpu = await level(args.conc, args.c32)
        result[f"c{args.conc}"] = {
            "runs": len(lat),
            "wall_s": round(wall, 3),
            "per_s": round(len(lat) / wall, 1),
            "p50_ms": round(pct(lat, 50) * 1000, 1) if lat else None,
            "cpu_ms_per_run": round(cpu / max(len(lat), 1) * 1000, 2),
        }
    result["errors"] = len(errors)
    result["error_samples"] = errors[:5]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--expected-file", required=True)
    parser.add_argument("--mode", default="plain")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--c1", type=int, default=30)
    parser.add_argument("--c32", type=int, default=320)
    parser.add_argument("--conc", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    expected = Path(args.expected_file).read_text()
    print(json.dumps(asyncio.run(main_async(args, expected))))


if __name__ == "__main__":
    main()

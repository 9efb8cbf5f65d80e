"""Scale-out benchmarks: the Celery topology on PostgreSQL, channels-redis and RabbitMQ, on loopback.

    .venv/bin/python bench/cluster.py                      # 1, 2, 4 workers; 300 tasks each
    .venv/bin/python bench/cluster.py --workers 2 --tasks 100

1. throughput: N tasks on the scripted model at zero latency (a reply in 5 chunks), created over REST
   on two web servers by 16 clients; tasks completed per second from the first create to the last
   completion, for 1, 2, 4 Celery worker processes (`--pool threads --concurrency 100` each).
2. latency: 20 tasks streaming 40 chunks each (one every 50 ms), followed over SSE on the *other* web
   server than the one they were created on; latency is the frame's arrival minus the event's stored
   `time` (when the worker appended it; same machine, same clock). p50 / p99 over every chunk
   appended after its subscriber connected (replayed ones are not live latency).
3. stop: 10 hanging runs stopped through the other web server; the DELETE's duration (it returns once
   the worker confirmed the stop), p50 / p95.

Each configuration gets a fresh private PostgreSQL database and Celery queue (tests/cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster, cluster_env  # noqa: E402
from tests.test_runtime_run import builtin_agent  # noqa: E402
from tests.tools.scripted_model import ScriptedModel, Turn  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def _count_finished(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select count(*) from tasks_app_task where status in ('completed','failed','error','stopped')"
        ).fetchone()[0]


def throughput(workers: int, tasks: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    env, database = cluster_env(
        workdir,
        postgres=True,
        redis_url="redis://127.0.0.1:6379/0",
        WEB_DB_CONNECTIONS="20",
        LOG_LEVEL="WARNING",
    )
    cluster = Cluster(workdir, env, database=database)
    try:
        a, b = cluster.start_server(), cluster.start_server()
        for _ in range(workers):
            cluster.start_worker(concurrency=100)
        alice = a.account("Bench", "bench@cluster.test")
        with ScriptedModel(
            [Turn.reply("one two three four five", chunks=5)] * (tasks + 10), process=True
        ) as model:
            agent = builtin_agent(a.client(alice), model)
            clients = [a.client(alice), b.client(alice)]

            def create(i: int) -> None:
                r = clients[i % 2].post(
                    f"/agent-execution/{agent['id']}", json={"input": {"text": f"job {i}"}}
                )
                assert r.status_code == 200, r.text

            t0 = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(tasks)))
            created = time.monotonic() - t0
            while _count_finished(env["DATABASE_URL"]) < tasks:
                if time.monotonic() - t0 > 600:
                    raise TimeoutError("tasks did not finish in 10 minutes")
                time.sleep(0.1)
            total = time.monotonic() - t0
        return {
            "workers": workers,
            "tasks": tasks,
            "create_s": round(created, 1),
            "total_s": round(total, 1),
            "tasks_per_s": round(tasks / total, 1),
        }
    finally:
        cluster.stop()


async def _follow(url: str, key: str, task_id: str, lat: list[float]) -> None:
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("GET", f"{url}/api/agent-execution/{task_id}/events", headers={"x-api-key": key}) as r,
    ):
        connected = time.time()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["type"] == "chunk":
                    appended = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
                    if appended > connected:  # live, not replayed from before the subscription
                        lat.append((time.time() - appended) * 1000)


def latency_and_stop() -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    env, database = cluster_env(
        workdir,
        postgres=True,
        redis_url="redis://127.0.0.1:6379/0",
        LOG_LEVEL="WARNING",
        STOP_WAIT_SECONDS="10",
    )
    cluster = Cluster(workdir, env, database=database)
    try:
        a, b = cluster.start_server(), cluster.start_server()
        cluster.start_worker(concurrency=100)
        cluster.start_worker(concurrency=100)
        alice = a.account("Bench", "bench@cluster.test")
        api_a, api_b = a.client(alice), b.client(alice)
        # The first byte after 5 s: every subscriber is connected before its task streams.
        stream = Turn.reply([f"w{i} " for i in range(40)], chunks=40, delay_chunk=0.05, delay_first=5)
        hang = Turn.reply("working", chunks=2, hang=True)
        with ScriptedModel(scripts={"[lat]": [stream] * 20, "[stop]": [hang] * 10}, process=True) as model:
            agent = builtin_agent(api_a, model)
            ids = [
                api_a.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"[lat] {i}"}}).json()[
                    "id"
                ]
                for i in range(20)
            ]
            lat: list[float] = []

            async def follow_all() -> None:
                await asyncio.gather(*(_follow(b.url, alice.api_key, t, lat) for t in ids))

            asyncio.run(follow_all())
            stops = [
                api_a.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"[stop] {i}"}}).json()[
                    "id"
                ]
                for i in range(10)
            ]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                states = [api_a.get(f"/agent-execution/{t}/status").json()["status"] for t in stops]
                if all(s == "executing" for s in states):
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # the model is streaming to every run
            took = []
            for t in stops:
                t0 = time.monotonic()
                r = api_b.delete(f"/agent-execution/{t}")
                took.append((time.monotonic() - t0) * 1000)
                assert r.json()["result"] == "Stopped by request", r.json()
        return {
            "chunks": len(lat),
            "latency_p50_ms": round(statistics.median(lat), 1),
            "latency_p99_ms": round(pct(lat, 99), 1),
            "stop_p50_ms": round(statistics.median(took), 1),
            "stop_p95_ms": round(pct(took, 95), 1),
        }
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--only", choices=["throughput", "latency"])
    args = parser.parse_args()
    if args.only != "latency":
        for n in args.workers:
            print(json.dumps({"throughput": throughput(n, args.tasks)}), flush=True)
    if args.only != "throughput":
        print(json.dumps({"latency": latency_and_stop()}), flush=True)


if __name__ == "__main__":
    main()

"""Benchmark of the official SDK's `@on_task` workers against the embedded default.

    .venv/bin/python bench/workers.py                  # 1 and 4 workers, 600 tasks each, 100 paced
    .venv/bin/python bench/workers.py --tasks 200 --paced 50

A LiveServer (tests/live.py) and N real worker processes of tests/sdk/on_task_worker.py in the
SDK's venv (an instant handler: it echoes the prompt). Two measures per worker count:
- throughput: `--tasks` tasks created by 8 client threads as fast as the server takes them; tasks
  per second from the first create sent to the last task completed (read back over REST);
  with the CPU the server and the worker processes spent per task meanwhile (/proc);
- latency: `--paced` tasks created one at a time on idle workers; create sent (client clock) to
  the handler starting (the worker's clock: the same machine), p50 / p99.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import LiveServer, free_port, server_env  # noqa: E402
from tests.test_sdk_compat import SDK_VENV, ensure_sdk_venv  # noqa: E402

SCRIPT = ROOT / "tests" / "sdk" / "on_task_worker.py"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(server: LiveServer, python: Path, workers: int, tasks: int, paced: int, tmp: Path) -> dict:
    account = server.account("Bench Org", "bench@workers.test")
    api = server.client(account)
    agent_id = api.post(
        "/v1/agents", json={"name": f"B {uuid.uuid4().hex[:6]}", "framework": "external"}
    ).json()["id"]
    log = tmp / f"handlers-{workers}.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "XPANDER_", "PYTHON"))}
    env.update(
        XPANDER_BASE_URL=server.api,
        XPANDER_API_KEY=account.api_key,
        XPANDER_ORGANIZATION_ID=account.organization_id,
        XPANDER_AGENT_ID=agent_id,
        WORKER_LOG=str(log),
        PYTHONUNBUFFERED="1",
    )
    procs = [
        subprocess.Popen(
            [str(python), str(SCRIPT)],
            env={**env, "XPANDER_STREAMING_PORT": str(free_port())},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(api.get(f"/v1/agents/{agent_id}/workers").json()) < workers:
            assert time.monotonic() < deadline, "workers did not register"
            time.sleep(0.2)

        def completed() -> int:
            r = api.get(
                f"/agent-execution/executions/history/{agent_id}",
                params={"status": "completed", "limit": 1000},
            )
            return len(r.json())

        # Latency: one task at a time on idle workers.
        sent: dict[str, float] = {}
        for i in range(paced):
            t0 = time.time()
            task_id = api.post(f"/agent-execution/{agent_id}", json={"input": {"text": f"paced {i}"}}).json()[
                "id"
            ]
            sent[task_id] = t0
            while completed() < i + 1:
                time.sleep(0.01)
        starts = {
            r["task"]: r["t"] for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "start"
        }
        latency = [starts[t] - sent[t] for t in sent]

        # Throughput: many at once.
        def create(i: int) -> None:
            with server.client(account) as c:
                r = c.post(f"/agent-execution/{agent_id}", json={"input": {"text": f"burst {i}"}})
                assert r.status_code == 200, r.text

        cpu_before = cpu_seconds(server.proc.pid), sum(cpu_seconds(p.pid) for p in procs)
        begin = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(tasks)))
        created = time.monotonic() - begin
        while completed() < paced + tasks:
            assert time.monotonic() - begin < 600, "tasks did not complete"
            time.sleep(0.1)
        elapsed = time.monotonic() - begin
        server_cpu = cpu_seconds(server.proc.pid) - cpu_before[0]
        workers_cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before[1]
        records = [json.loads(line) for line in log.read_text().splitlines()]
        runs = [r for r in records if r["event"] == "start"]
        ran = Counter(r["task"] for r in runs)
        twice = sorted(t for t, n in ran.items() if n > 1)
        assert not twice and len(ran) == paced + tasks, (
            f"ran twice: {twice}; ran: {len(ran)} of {paced + tasks}"
        )
        return {
            "workers": workers,
            "tasks": tasks,
            "tasks_per_second": round(tasks / elapsed, 1),
            "create_seconds": round(created, 2),
            "drain_seconds": round(elapsed, 2),
            "server_cpu_ms_per_task": round(server_cpu / tasks * 1000, 1),  # creates included
            "workers_cpu_ms_per_task": round(workers_cpu / tasks * 1000, 1),
            "latency_ms_p50": round(statistics.median(latency) * 1000, 1),
            "latency_ms_p99": round(quantile(latency, 0.99) * 1000, 1),
            "per_worker": sorted((sum(1 for r in runs if r["pid"] == p.pid) for p in procs), reverse=True),
        }
    finally:
        for p in procs:
            p.kill()
            p.wait()
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,4", help="worker counts, comma-separated")
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--paced", type=int, default=100)
    args = parser.parse_args()
    python = ensure_sdk_venv(SDK_VENV)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = LiveServer(workdir, server_env(workdir, LOG_LEVEL="WARNING"))
        server.start()
        try:
            for n in (int(x) for x in args.workers.split(",")):
                print(json.dumps(run(server, python, n, args.tasks, args.paced, workdir)), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()

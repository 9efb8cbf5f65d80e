"""The scaled-out topology under a crash: two web servers and two Celery workers on loopback, one
PostgreSQL database (private to the test), the machine's Redis (channels-redis) and RabbitMQ.

100 tasks with a tool call each run on the scripted model; one worker is killed with SIGKILL in the
middle. Every task must end in a final state, every subscriber on both servers must see every event
of its task exactly once and in order (the same events a replay of the durable log gives), no task
may run twice at the same time, and a stop sent to either server stops a run on either worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
import uuid

import httpx
import pytest

from tests.cluster import Cluster, cluster_env
from tests.test_runtime_mcp import mcp_graph
from tests.test_runtime_run import builtin_agent
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live

TASKS = int(os.environ.get("CLUSTER_TEST_TASKS", "100"))
REDIS_URL = "redis://127.0.0.1:6379/0"


def _script(body: dict) -> Turn:
    """A tool call first, then a streamed answer slow enough that runs overlap the crash."""
    if any(m.get("role") == "tool" for m in body.get("messages") or []):
        return Turn.reply(["Done ", "with ", "the ", "lookup."], chunks=4, delay_chunk=0.15)
    return Turn.tool("whoami", {}, delay_first=0.2)


async def _follow(url: str, key: str, task_id: str, out: list[tuple[int, str]]) -> None:
    """An SSE subscriber from the start of the task to its end, as the SDK follows one."""
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("GET", f"{url}/api/agent-execution/{task_id}/events", headers={"x-api-key": key}) as r,
    ):
        assert r.status_code == 200, await r.aread()
        seq = None
        async for line in r.aiter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: "):
                out.append((seq, json.loads(line[6:])["type"]))


def _follow_all(streams: list[tuple[str, str, str, list]]) -> threading.Thread:
    async def one(url: str, key: str, task_id: str, out: list) -> None:
        try:
            await _follow(url, key, task_id, out)
        except Exception as exc:  # kept in the record, so the assertion shows which stream broke
            out.append((-1, f"error: {exc!r}"))

    async def main() -> None:
        await asyncio.gather(*(one(*s) for s in streams))

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    return thread


def _replay(url: str, key: str, task_id: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    asyncio.run(_follow(url, key, task_id, out))
    return out


@pytest.fixture
def cluster(tmp_path):
    env, database = cluster_env(
        tmp_path,
        postgres=True,
        redis_url=REDIS_URL,
        WORKER_LEASE_SECONDS="3",
        WORKER_HEARTBEAT_SECONDS="0.5",
        STOP_WAIT_SECONDS="10",
        SSE_MAX_STREAMS_PER_KEY="500",
        WEB_DB_CONNECTIONS="15",  # 2 servers and 2 workers within PostgreSQL's 100 connections
    )
    cluster = Cluster(tmp_path, env, database=database)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_it_survives_a_killed_worker_with_every_event_once_and_in_order_on_both_servers(cluster, mcp_server):
    a, b = cluster.start_server(), cluster.start_server()
    w1, w2 = cluster.start_worker(concurrency=60), cluster.start_worker(concurrency=60)
    alice = a.account("Cluster Org", "alice@cluster.test")
    api_a, api_b = a.client(alice), b.client(alice)
    run = uuid.uuid4().hex[:6]
    keys = [f"[mp-{run}-{i:03d}]" for i in range(TASKS)]
    with ScriptedModel(scripts=dict.fromkeys(keys, _script)) as model:
        agent = builtin_agent(api_a, model, graph=mcp_graph(mcp_server.url))
        tasks = []
        for i, key in enumerate(keys):
            api = api_a if i % 2 == 0 else api_b
            r = api.post(
                f"/agent-execution/{agent['id']}",
                json={
                    "input": {"text": f"{key} who am I?", "user": {"id": "u-alice", "email": "a@c.test"}},
                    "user_tokens": {"gi-tools": "tok-alice"},
                },
            )
            assert r.status_code == 200, r.text
            tasks.append(r.json()["id"])
        seen = {(t, s.url): [] for t in tasks for s in (a, b)}
        follower = _follow_all([(url, alice.api_key, t, out) for (t, url), out in seen.items()])

        # Kill one worker while about half the runs are under way.
        # (answers streaming, not only first requests waiting: a first answer is one write, which a
        # dead peer does not interrupt)
        model.wait_for(
            lambda: (
                len(model.requests) >= TASKS // 2
                and sum(1 for r in model.requests if not r.done and r.chunks_sent) >= 10
            ),
            timeout=60,
        )
        cluster.kill(w1)
        follower.join(timeout=240)
        unfinished = {k: v[-3:] for k, v in seen.items() if not v or v[-1][1] != "task_finished"}
        assert not unfinished, f"{len(unfinished)} subscribers did not see their task finish: {unfinished}"

        statuses = {t: api_a.get(f"/agent-execution/{t}/status").json()["status"] for t in tasks}
        requests = list(model.requests)
    assert set(statuses.values()) == {"completed"}, statuses
    assert "ran" in w2.log_text()

    for task_id in tasks:
        replay = _replay(a.url, alice.api_key, task_id)
        seqs = [s for s, _ in replay]
        assert seqs == sorted(set(seqs)), f"the durable log of {task_id} is out of order"
        assert replay[-1][1] == "task_finished"
        for server in (a, b):
            assert seen[(task_id, server.url)] == replay, f"{task_id} on {server.url} differs from its log"

    # No task ran twice at once: its model requests never overlap in time.
    by_task: dict[str, list] = {}
    for req in requests:
        by_task.setdefault(re.search(r"\[mp-\w+-\d+\]", req.user_text).group(0), []).append(req)
    for key, reqs in by_task.items():
        reqs.sort(key=lambda r: r.received_at)
        for earlier, later in itertools.pairwise(reqs):
            assert earlier.finished_at is not None and earlier.finished_at <= later.received_at, key
    # An interrupted run shows as a model answer cut off, or (killed between its two requests, while
    # calling its tool) as a task whose model was asked more often than one run asks (twice).
    rerun = [k for k, reqs in by_task.items() if any(r.disconnected for r in reqs) or len(reqs) > 2]
    assert rerun, "the kill interrupted no run: the test did not test a crash"


def test_a_stop_sent_to_either_server_stops_a_run_on_either_worker(cluster):
    a, b = cluster.start_server(), cluster.start_server()
    w1, w2 = cluster.start_worker(concurrency=10), cluster.start_worker(concurrency=10)
    alice = a.account("Cluster Org", "alice@cluster.test")
    api_a, api_b = a.client(alice), b.client(alice)
    marker = f"[st-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: lambda body: Turn.reply("Working", chunks=2, hang=True)}) as model:
        agent = builtin_agent(api_a, model)
        tasks = [
            api_a.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} {i}"}}).json()[
                "id"
            ]
            for i in range(8)
        ]
        model.wait_for(lambda: sum(r.chunks_sent >= 1 for r in model.requests) == 8, timeout=30)
        took = []
        for i, task_id in enumerate(tasks):
            t0 = time.monotonic()
            r = (api_a if i % 2 else api_b).delete(f"/agent-execution/{task_id}")
            took.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
            assert r.json()["result"] == "Stopped by request"  # the worker stopped it, not the fallback
    deadline = time.monotonic() + 10  # a worker logs the run just after the stop commits
    while True:
        ran_on = {t: [w.name for w in (w1, w2) if f"task {t}: ran" in w.log_text()] for t in tasks}
        if all(ran_on.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(len(names) == 1 for names in ran_on.values()), {t: n for t, n in ran_on.items() if len(n) != 1}
    assert {names[0] for names in ran_on.values()} == {w1.name, w2.name}, "all runs landed on one worker"
    took.sort()
    assert took[int(len(took) * 0.95) - 1] < 1.0, took

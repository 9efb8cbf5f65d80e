"""TASK_EXECUTION=celery: a web server hands runs to a separate Celery worker through RabbitMQ.

Real processes on loopback: daphne, `celery -A console worker --pool threads`, the machine's
RabbitMQ (a private queue per test) and the scripted model server.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import Celery

from tests.cluster import RABBITMQ_URL, Cluster, cluster_env
from tests.test_runtime_run import builtin_agent, sse
from tests.test_runtime_stop import wait_status
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


@pytest.fixture
def cluster(tmp_path):
    # A heartbeat far slower than the test: a stop that arrives in time came over the broker.
    env, database = cluster_env(
        tmp_path,
        postgres=False,
        WORKER_HEARTBEAT_SECONDS="60",
        WORKER_LEASE_SECONDS="120",
        STOP_WAIT_SECONDS="10",
    )
    cluster = Cluster(tmp_path, env, database=database)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_it_runs_many_tasks_at_once_in_one_worker_process_and_stops_them_over_the_broker(cluster):
    server = cluster.start_server()
    worker = cluster.start_worker(concurrency=20)
    alice = server.account("Celery Org", "alice@celery.test")
    api = server.client(alice)
    marker = f"[cel-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: lambda body: Turn.reply("Working", chunks=2, hang=True)}) as model:
        agent = builtin_agent(api, model)
        started = time.monotonic()
        tasks = [
            api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} job {i}"}}).json()
            for i in range(8)
        ]
        # All eight stream from the model at the same time, in the one worker process.
        model.wait_for(lambda: sum(r.chunks_sent >= 1 for r in model.requests) == 8, timeout=30)
        delivered = time.monotonic() - started
        assert delivered < 10, f"runs took {delivered:.1f}s to start: delivered by a poll?"

        def stop(task_id: str) -> tuple[float, dict]:
            t0 = time.monotonic()
            r = server.client(alice).delete(f"/agent-execution/{task_id}")
            assert r.status_code == 200, r.text
            return time.monotonic() - t0, r.json()

        with ThreadPoolExecutor(8) as pool:
            stops = list(pool.map(stop, [t["id"] for t in tasks]))
        model.wait_for(lambda: all(r.disconnected for r in model.requests), timeout=10)
    for took, body in stops:
        assert body["status"] == "stopped"
        assert body["result"] == "Stopped by request", body["result"]  # the worker's own stop, not forced
        assert took < 3, f"a stop took {took:.2f}s"
    assert worker.proc.poll() is None
    assert len({r.index for r in model.requests}) == 8


def test_it_claims_a_task_delivered_twice_only_once(cluster):
    server = cluster.start_server()
    cluster.start_worker(concurrency=10)
    alice = server.account("Celery Org", "alice@celery.test")
    api = server.client(alice)
    marker = f"[dup-{uuid.uuid4().hex[:6]}]"
    sender = Celery(broker=RABBITMQ_URL)
    with ScriptedModel(
        scripts={marker: lambda body: Turn.reply("Only once.", chunks=3, delay_chunk=0.05)}
    ) as model:
        agent = builtin_agent(api, model)
        task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} go"}}).json()
        for _ in range(3):  # the same run delivered again, as after a redelivery
            sender.send_task("tasks_app.run", args=[task["id"]], queue=cluster.env["CELERY_QUEUE"])
        done = wait_status(api, task["id"], "completed", timeout=30)
        time.sleep(1.0)  # let the duplicates arrive and be refused
    assert done["result"] == "Only once."
    assert len(model.requests) == 1
    events = sse(server, alice, task["id"])
    assert [e["type"] for e in events].count("task_finished") == 1
    sender.close()

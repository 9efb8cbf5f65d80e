"""A Redis restart while tasks stream: a private redis-server (a free port, not the machine's own)
carries the live events between a Celery worker and a web server; killed and started again in the
middle, the subscribers still receive every event once and in order, filled in from the durable log.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import pytest

from tests.cluster import Cluster, cluster_env
from tests.live import free_port, wait_for_port
from tests.test_cluster import _follow_all, _replay
from tests.test_runtime_run import builtin_agent
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


class PrivateRedis:
    def __init__(self, workdir) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def test_it_loses_no_event_when_redis_restarts_during_streaming(tmp_path, redis):
    env, database = cluster_env(tmp_path, postgres=False, redis_url=redis.url, SSE_KEEPALIVE_SECONDS="30")
    cluster = Cluster(tmp_path, env, database=database)
    try:
        server = cluster.start_server()
        cluster.start_worker(concurrency=10)
        alice = server.account("Redis Org", "alice@redis.test")
        api = server.client(alice)
        marker = f"[rr-{uuid.uuid4().hex[:6]}]"
        words = [f"w{i} " for i in range(60)]
        with ScriptedModel(
            scripts={marker: lambda body: Turn.reply(words, chunks=60, delay_chunk=0.1)}
        ) as model:
            agent = builtin_agent(api, model)
            tasks = [
                api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} {i}"}}).json()[
                    "id"
                ]
                for i in range(4)
            ]
            seen = {t: [] for t in tasks}
            follower = _follow_all([(server.url, alice.api_key, t, out) for t, out in seen.items()])
            model.wait_for(
                lambda: len(model.requests) == 4 and all(r.chunks_sent >= 10 for r in model.requests)
            )
            redis.kill()  # Redis keeps nothing: groups and queued messages are gone
            time.sleep(1.0)
            redis.start()
            follower.join(timeout=60)
            assert isinstance(follower, threading.Thread) and not follower.is_alive(), seen
        for task_id, got in seen.items():
            replay = _replay(server.url, alice.api_key, task_id)
            assert replay[-1][1] == "task_finished"
            assert got == replay, f"{task_id}: {got[-3:]} vs {replay[-3:]}"
            status = api.get(f"/agent-execution/{task_id}/status").json()
            assert status["status"] == "completed", status
    finally:
        cluster.stop()

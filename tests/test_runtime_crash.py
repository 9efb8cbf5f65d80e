"""A worker killed with SIGKILL mid-task: its lease expires and the task does not stay executing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.live import ROOT, LiveServer, server_env
from tests.test_runtime_run import builtin_agent
from tests.test_runtime_stop import wait_status
from tests.tools.scripted_model import ScriptedModel, Turn

pytestmark = pytest.mark.live


@pytest.fixture
def split_server(tmp_path):
    """A server without its own worker (TASK_EXECUTION=none), so workers run as separate processes."""
    env = server_env(
        tmp_path,
        TASK_EXECUTION="none",
        WORKER_LEASE_SECONDS="1.5",
        WORKER_HEARTBEAT_SECONDS="0.3",
        WORKER_POLL_SECONDS="0.2",
        WORKER_MAX_ATTEMPTS="2",
    )
    server = LiveServer(tmp_path, env)
    server.start()
    yield server
    server.stop()


def start_worker(server: LiveServer) -> subprocess.Popen:
    log = open(server.workdir / "worker.log", "ab")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker"],
        env=server.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@contextlib.contextmanager
def running_worker(server: LiveServer) -> Iterator[subprocess.Popen]:
    """A `runworker` process that is always gone when the block ends, whatever the test did to it."""
    worker = start_worker(server)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()


def wait_streaming(model: ScriptedModel, attempt: int = 1) -> None:
    """Wait until the model is streaming the answer of the given attempt (the run is mid-task)."""
    model.wait_for(
        lambda: len(model.requests) >= attempt and model.requests[attempt - 1].chunks_sent >= 1, timeout=30
    )


def start_task(api, model: ScriptedModel, marker: str) -> dict:
    agent = builtin_agent(api, model)
    return api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} go"}}).json()


HANG = Turn.reply("never", chunks=2, hang=True)


def test_a_killed_worker_is_replaced_and_the_task_completes(split_server):
    api = split_server.client(split_server.account("Crash Org", "alice@crash.test"))
    marker = f"[crash-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [HANG, Turn.reply("Recovered.")]}) as model:
        task = start_task(api, model, marker)
        with running_worker(split_server) as first:
            wait_streaming(model)
            assert api.get(f"/agent-execution/{task['id']}/status").json()["status"] == "executing"
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        with running_worker(split_server):
            done = wait_status(api, task["id"], "completed", timeout=40)
    assert done["result"] == "Recovered."
    assert done["execution_attempts"] == 2


def test_it_fails_clearly_after_the_last_attempt(split_server):
    api = split_server.client(split_server.account("Crash Org", "alice@crash.test"))
    marker = f"[crash2-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [HANG, HANG]}) as model:
        task = start_task(api, model, marker)
        for attempt in (1, 2):
            with running_worker(split_server) as worker:
                wait_streaming(model, attempt)
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        with running_worker(split_server):
            failed = wait_status(api, task["id"], "failed", timeout=40)
    assert "stopped responding 2 times" in failed["result"]


def test_a_worker_shut_down_gracefully_hands_its_task_back(split_server):
    api = split_server.client(split_server.account("Crash Org", "alice@crash.test"))
    marker = f"[term-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(scripts={marker: [HANG, Turn.reply("Resumed.")]}) as model:
        task = start_task(api, model, marker)
        with running_worker(split_server) as first:
            wait_streaming(model)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=20) == 0
        assert api.get(f"/agent-execution/{task['id']}/status").json()["status"] == "pending"
        with running_worker(split_server):
            done = wait_status(api, task["id"], "completed", timeout=40)
    assert done["result"] == "Resumed."

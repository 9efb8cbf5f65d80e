"""A worker killed with SIGKILL mid-task: its lease expires and the task does not stay executing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

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


def test_a_killed_worker_is_replaced_and_the_task_completes(split_server):
    alice = split_server.account("Crash Org", "alice@crash.test")
    api = split_server.client(alice)
    marker = f"[crash-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(
        scripts={marker: [Turn.reply("never", chunks=2, hang=True), Turn.reply("Recovered.")]}
    ) as model:
        agent = builtin_agent(api, model)
        task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} go"}}).json()
        first = start_worker(split_server)
        try:
            model.wait_for(lambda: model.requests and model.requests[0].chunks_sent >= 1, timeout=30)
            assert api.get(f"/agent-execution/{task['id']}/status").json()["status"] == "executing"
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            second = start_worker(split_server)
            try:
                done = wait_status(api, task["id"], "completed", timeout=40)
            finally:
                second.terminate()
                second.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
    assert done["result"] == "Recovered."
    assert done["execution_attempts"] == 2


def test_it_fails_clearly_after_the_last_attempt(split_server):
    alice = split_server.account("Crash Org", "alice@crash.test")
    api = split_server.client(alice)
    marker = f"[crash2-{uuid.uuid4().hex[:6]}]"
    hang = Turn.reply("never", chunks=2, hang=True)
    with ScriptedModel(scripts={marker: [hang, hang]}) as model:
        agent = builtin_agent(api, model)
        task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} go"}}).json()
        for attempt in (1, 2):
            worker = start_worker(split_server)
            model.wait_for(
                lambda n=attempt: len(model.requests) >= n and model.requests[n - 1].chunks_sent >= 1,
                timeout=30,
            )
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        reaper = start_worker(split_server)
        try:
            failed = wait_status(api, task["id"], "failed", timeout=40)
        finally:
            reaper.terminate()
            reaper.wait(timeout=10)
    assert "stopped responding 2 times" in failed["result"]


def test_a_worker_shut_down_gracefully_hands_its_task_back(split_server):
    alice = split_server.account("Crash Org", "alice@crash.test")
    api = split_server.client(alice)
    marker = f"[term-{uuid.uuid4().hex[:6]}]"
    with ScriptedModel(
        scripts={marker: [Turn.reply("never", chunks=2, hang=True), Turn.reply("Resumed.")]}
    ) as model:
        agent = builtin_agent(api, model)
        task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": f"{marker} go"}}).json()
        first = start_worker(split_server)
        model.wait_for(lambda: model.requests and model.requests[0].chunks_sent >= 1, timeout=30)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        assert api.get(f"/agent-execution/{task['id']}/status").json()["status"] == "pending"
        second = start_worker(split_server)
        try:
            done = wait_status(api, task["id"], "completed", timeout=40)
        finally:
            second.terminate()
            second.wait(timeout=10)
    assert done["result"] == "Resumed."

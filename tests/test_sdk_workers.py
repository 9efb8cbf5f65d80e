"""The official SDK's `@on_task` workers, unmodified, against a live server (xpander-on-task-wire.md).

Each worker is a real process of tests/sdk/on_task_worker.py in the SDK's own venv; it appends
each handler start and end to a log file, so the tests can tell which process ran which task and
when. The server runs with short leases, so a killed worker's task comes back in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import ROOT, Account, LiveServer, free_port, server_env
from tests.test_sdk_compat import SDK_VENV, ensure_sdk_venv

pytestmark = [pytest.mark.sdk, pytest.mark.live, pytest.mark.timeout(600)]

SCRIPT = ROOT / "tests" / "sdk" / "on_task_worker.py"
LEASE = 4  # WORKER_LEASE_SECONDS of the server under test
ACK = 3  # WORKER_ACK_SECONDS


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return ensure_sdk_venv(SDK_VENV)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("workers")
    env = server_env(
        workdir,
        WORKER_LEASE_SECONDS=str(LEASE),
        WORKER_ACK_SECONDS=str(ACK),
        WORKER_MAX_ATTEMPTS="2",
        WORKER_POLL_SECONDS="0.5",
    )
    live = LiveServer(workdir, env)
    live.start()
    yield live
    live.stop()


class Workers:
    """Starts worker processes for one agent and reads their shared handler log."""

    def __init__(self, server: LiveServer, account: Account, agent_id: str, sdk_python: Path, tmp: Path):
        self.server, self.account, self.agent_id, self.python = server, account, agent_id, sdk_python
        self.log = tmp / f"handlers-{uuid.uuid4().hex[:6]}.jsonl"
        self.log.touch()
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "XPANDER_", "PYTHON"))}
        env.update(
            XPANDER_BASE_URL=self.server.api,
            XPANDER_API_KEY=self.account.api_key,
            XPANDER_ORGANIZATION_ID=self.account.organization_id,
            XPANDER_AGENT_ID=self.agent_id,
            XPANDER_STREAMING_PORT=str(free_port()),  # the SDK's side server; one per process
            WORKER_LOG=str(self.log),
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, *args: str) -> subprocess.Popen:
        out = open(self.log.with_suffix(f".{len(self.procs)}.out"), "w")  # noqa: SIM115 - the process's life
        proc = subprocess.Popen(
            [str(self.python), str(SCRIPT), *args], env=self.env(), stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def output(self, index: int) -> str:
        return self.log.with_suffix(f".{index}.out").read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def starts(self, task_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["task"] == task_id and r["event"] == "start"]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def agent(server) -> tuple[Account, str]:
    account = server.account("Workers Org", "wendy@workers.test")
    with server.client(account) as api:
        r = api.post("/v1/agents", json={"name": f"Ext {uuid.uuid4().hex[:6]}", "framework": "external"})
        assert r.status_code == 201, r.text
        return account, r.json()["id"]


@pytest.fixture
def workers(server, agent, sdk_python, tmp_path) -> Iterator[Workers]:
    account, agent_id = agent
    pool = Workers(server, account, agent_id, sdk_python, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def api(server, agent) -> Iterator[httpx.Client]:
    with server.client(agent[0]) as client:
        yield client


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def live_workers(api: httpx.Client, agent_id: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/agents/{agent_id}/workers")
    assert r.status_code == 200, r.text
    return r.json()


def wait_workers(api: httpx.Client, agent_id: str, count: int) -> list[dict[str, Any]]:
    return wait_for(f"{count} workers", lambda: (w := live_workers(api, agent_id)) and len(w) == count and w)


def create(api: httpx.Client, agent_id: str, text: str, **extra: Any) -> str:
    r = api.post(f"/agent-execution/{agent_id}", json={"input": {"text": text}, **extra})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    return api.get(f"/agent-execution/{task_id}/status").json()


def wait_finished(api: httpx.Client, task_id: str, timeout: float = 40) -> dict[str, Any]:
    done = {"completed", "error", "failed", "stopped"}
    return wait_for(
        f"task {task_id} to finish", lambda: (t := task(api, task_id))["status"] in done and t, timeout
    )


def never_overlapping(records: list[dict[str, Any]], task_id: str) -> bool:
    """Runs of one task never overlap in time (a start only after the previous run's end or death)."""
    runs = [r for r in records if r["task"] == task_id]
    open_runs: dict[int, float] = {}
    for r in sorted(runs, key=lambda r: r["t"]):
        if r["event"] == "start":
            if open_runs:
                return False
            open_runs[r["pid"]] = r["t"]
        else:
            open_runs.pop(r["pid"], None)
    return True


# ---- delivery and results --------------------------------------------------------------------


def test_it_runs_each_task_of_the_agent_once_and_stores_the_result(api, agent, workers):
    _, agent_id = agent
    early = create(api, agent_id, "created before any worker")
    workers.start()
    [worker] = wait_workers(api, agent_id, 1)
    later = create(api, agent_id, "created while connected")
    failing = create(api, agent_id, "raise:the handler gave up")

    assert wait_finished(api, early)["result"] == "echo: created before any worker"
    done = wait_finished(api, later)
    assert (done["status"], done["result"]) == ("completed", "echo: created while connected")
    assert done["started_at"] and done["finished_at"]
    failed = wait_finished(api, failing)
    assert (failed["status"], failed["result"]) == ("error", "the handler gave up")
    for task_id in (early, later, failing):
        assert len(workers.starts(task_id)) == 1
    thread = api.get(f"/activity/{agent_id}/{later}").json()
    assert thread["messages"][-1]["content"]["text"] == "echo: created while connected"
    assert worker["id"].startswith("worker-") and worker["environment"] == "local"
    assert wait_for("the worker to be idle", lambda: live_workers(api, agent_id)[0]["tasks_in_hand"] == [])


def test_it_spreads_tasks_over_workers_and_never_delivers_one_twice(api, agent, workers):
    _, agent_id = agent
    tasks = [create(api, agent_id, "sleep:1.5") for _ in range(16)]  # more than two workers' 12 slots
    workers.start()
    workers.start()
    wait_workers(api, agent_id, 2)
    for task_id in tasks:
        assert wait_finished(api, task_id, timeout=60)["status"] == "completed"
    records = workers.records()
    for task_id in tasks:
        assert len(workers.starts(task_id)) == 1
    pids = {r["pid"] for r in records}
    assert len(pids) == 2  # both took some
    for pid in pids:  # and neither ever had more than the SDK's 6 at once
        running, peak = 0, 0
        for r in sorted((r for r in records if r["pid"] == pid), key=lambda r: r["t"]):
            running += 1 if r["event"] == "start" else -1
            peak = max(peak, running)
        assert peak <= 6


# ---- failures: a killed worker, a silent one, a stop, a restart ---------------------------------


def test_it_gives_a_killed_workers_task_to_another_worker(api, agent, workers):
    _, agent_id = agent
    first = workers.start()
    wait_workers(api, agent_id, 1)
    task_id = create(api, agent_id, "sleep:3")
    wait_for("the first run to start", lambda: workers.starts(task_id))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    workers.start()
    done = wait_finished(api, task_id, timeout=40)
    assert (done["status"], done["result"]) == ("completed", "echo: sleep:3")
    runs = workers.starts(task_id)
    assert [r["pid"] for r in runs] == [first.pid, workers.procs[1].pid]
    assert runs[1]["t"] - runs[0]["t"] >= LEASE - 1  # after the dead worker's lease ran out


def test_it_stops_a_running_task_and_keeps_it_stopped(api, agent, workers):
    _, agent_id = agent
    workers.start()
    wait_workers(api, agent_id, 1)
    task_id = create(api, agent_id, "sleep:2")
    wait_for("the run to start", lambda: workers.starts(task_id))
    r = api.delete(f"/agent-execution/{task_id}")
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    wait_for("the handler to end", lambda: [x for x in workers.records() if x["event"] == "end"])
    time.sleep(1)  # the worker's final PATCH has landed by now
    stopped = task(api, task_id)
    assert (stopped["status"], stopped["is_manually_stopped"]) == ("stopped", True)
    assert stopped["result"] != "echo: sleep:2"
    assert live_workers(api, agent_id)[0]["tasks_in_hand"] == []


def test_it_serves_the_workers_again_after_a_server_restart(server, api, agent, workers):
    _, agent_id = agent
    workers.start()
    [before] = wait_workers(api, agent_id, 1)
    in_flight = create(api, agent_id, "sleep:1")
    wait_for("the run to start", lambda: workers.starts(in_flight))
    server.stop()
    server.start(same_port=True)
    [after] = wait_workers(api, agent_id, 1)
    assert after["id"] != before["id"]  # a reconnect registers again
    fresh = create(api, agent_id, "after the restart")
    assert wait_finished(api, fresh)["result"] == "echo: after the restart"
    assert wait_finished(api, in_flight, timeout=40)["status"] == "completed"
    assert never_overlapping(workers.records(), in_flight)
    assert workers.procs[0].poll() is None  # the same process all along


def test_it_does_not_send_the_clis_own_task_to_a_worker(api, agent, workers):
    _, agent_id = agent
    workers.start()
    wait_workers(api, agent_id, 1)
    cli = workers.start("--invoke", "--prompt", "run here")
    assert cli.wait(timeout=60) == 0, workers.output(1)
    [run] = [r for r in workers.records() if r["event"] == "start"]
    assert run["pid"] == cli.pid
    done = task(api, run["task"])
    assert (done["status"], done["result"]) == ("completed", "echo: run here")
    time.sleep(1)
    assert len(workers.starts(run["task"])) == 1

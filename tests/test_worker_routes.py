"""The `@on_task` worker routes on the wire, driven by a plain HTTP client against a live server.

What the SDK itself cannot show quickly: the exact registration shape, a delivery that is never
acknowledged, another organization's key, and bad input on the new routes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live import Account, LiveServer, server_env

pytestmark = pytest.mark.live

ACK = 1.5  # WORKER_ACK_SECONDS of the server under test
SSE = {"Accept": "text/event-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("worker-routes")
    env = server_env(workdir, WORKER_ACK_SECONDS=str(ACK), WORKER_MAX_ATTEMPTS="2", WORKER_POLL_SECONDS="2")
    live = LiveServer(workdir, env)
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def alice(server) -> Account:
    return server.account("Routes Org", "alice@routes.test")


@pytest.fixture(scope="module")
def charlie(server) -> Account:
    return server.account("Other Org", "charlie@routes.test")


def new_agent(server: LiveServer, account: Account, framework: str = "external") -> str:
    with server.client(account) as api:
        r = api.post("/v1/agents", json={"name": f"A {uuid.uuid4().hex[:6]}", "framework": framework})
        assert r.status_code == 201, r.text
        return r.json()["id"]


class Stream:
    """An open worker stream, read event by event (what the SDK's listener does)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def next_event(self, within: float | None = None) -> tuple[str, Any] | None:
        """The next named event; None if only keep-alives came for `within` seconds."""
        deadline = None if within is None else time.monotonic() + within
        name, data = "message", None
        for line in self.lines:
            if deadline is not None and time.monotonic() > deadline and data is None:
                return None
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "" and data is not None:
                return name, data
        raise AssertionError("the stream ended")


def connect(client: httpx.Client, server: LiveServer, account: Account, agent_id: str):
    url = f"{server.api}/{account.organization_id}/events/{agent_id}/?environment=local&supports_llm_gateway=true"
    return client.stream("GET", url, headers={"x-api-key": account.api_key, **SSE}, timeout=30)


def post_status(
    server: LiveServer, account: Account, worker_id: str, body: Any, org: str | None = None, **kw
):
    url = f"{server.api}/{org or account.organization_id}/events/{worker_id}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        url,
        content=content,
        headers={"x-api-key": account.api_key, "Content-Type": "application/json"},
        params={"type": "worker", **kw},
        timeout=10,
    )


def beat() -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "event": "worker-heartbeat", "data": "2026-12-05T02:00:00.123456"}


def test_it_registers_a_worker_with_every_key_the_sdk_requires(server, alice):
    agent_id = new_agent(server, alice)
    with httpx.Client() as client, connect(client, server, alice, agent_id) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = Stream(r)  # kept: a dropped line iterator closes the response
        name, asset = stream.next_event()
        assert name == "worker-registration"
        assert {"created_by", "dedicated_agent_id", "parent_asset_id"} <= asset.keys()
        assert (asset["type"], asset["dedicated_agent_id"], asset["organization_id"]) == (
            "worker",
            agent_id,
            alice.organization_id,
        )
        ok = post_status(server, alice, asset["id"], beat(), agent_id=agent_id)
        assert ok.status_code == 200 and ok.json() == {"accepted": True, "worker_id": asset["id"]}
        busy = {"id": "x", "event": "worker-capacity-update", "data": {"is_busy": True}}
        assert post_status(server, alice, asset["id"], busy).status_code == 200
        with server.client(alice) as api:
            [listed] = api.get(f"/v1/agents/{agent_id}/workers").json()
        assert (listed["id"], listed["is_busy"], listed["tasks_in_hand"]) == (asset["id"], True, [])


def test_it_takes_back_an_unacknowledged_delivery_and_fails_it_after_the_last_attempt(server, alice):
    agent_id = new_agent(server, alice)
    with server.client(alice) as api:
        task_id = api.post(f"/agent-execution/{agent_id}", json={"input": {"text": "hi"}}).json()["id"]
        with httpx.Client() as client, connect(client, server, alice, agent_id) as r:
            stream = Stream(r)
            assert stream.next_event()[0] == "worker-registration"
            name, delivered = stream.next_event()
            assert (name, delivered["id"], delivered["status"]) == ("agent-execution", task_id, "pending")
            # Never acknowledged: taken back after WORKER_ACK_SECONDS and delivered again.
            started = time.monotonic()
            name, again = stream.next_event()
            assert (name, again["id"]) == ("agent-execution", task_id)
            assert time.monotonic() - started >= ACK - 0.5
            deadline = time.monotonic() + 10
            while (t := api.get(f"/agent-execution/{task_id}/status").json())["status"] == "pending":
                assert time.monotonic() < deadline, "the task was never failed"
                time.sleep(0.1)
        assert t["status"] == "failed"
        assert "did not acknowledge" in t["result"]


def test_it_sends_a_busy_worker_nothing_until_it_has_a_free_slot(server, alice):
    agent_id = new_agent(server, alice)
    with server.client(alice) as api, httpx.Client() as client, connect(client, server, alice, agent_id) as r:
        stream = Stream(r)
        worker_id = stream.next_event()[1]["id"]
        busy = {"id": "x", "event": "worker-capacity-update", "data": {"is_busy": True}}
        assert post_status(server, alice, worker_id, busy).status_code == 200
        task_id = api.post(f"/agent-execution/{agent_id}", json={"input": {"text": "wait"}}).json()["id"]
        assert stream.next_event(within=2) is None  # it holds its slots: it would not read the task
        free = {"id": "y", "event": "worker-capacity-update", "data": {"is_busy": False}}
        started = time.monotonic()
        assert post_status(server, alice, worker_id, free).status_code == 200
        name, delivered = stream.next_event()
        assert (name, delivered["id"]) == ("agent-execution", task_id)
        assert time.monotonic() - started < 1  # at once, not at the next poll


def test_it_delivers_nothing_of_a_task_created_for_the_cli(server, alice):
    agent_id = new_agent(server, alice)
    with server.client(alice) as api:
        local = api.post(f"/agent-execution/{agent_id}", json={"input": {"text": "cli"}, "run_locally": True})
        assert local.status_code == 200
        shared = api.post(f"/agent-execution/{agent_id}", json={"input": {"text": "anyone"}}).json()["id"]
    with httpx.Client() as client, connect(client, server, alice, agent_id) as r:
        stream = Stream(r)
        stream.next_event()
        assert stream.next_event()[1]["id"] == shared  # the older run_locally task was skipped


# ---- another organization, bad input -----------------------------------------------------------


def test_it_refuses_another_organizations_key(server, alice, charlie):
    agent_id = new_agent(server, alice)
    with httpx.Client() as client:
        with connect(client, server, charlie, agent_id) as r:  # charlie's org, alice's agent
            assert r.status_code == 404
            assert r.headers["content-type"].startswith("text/event-stream")
            name, data = Stream(r).next_event()
            assert name == "worker-environment-conflict" and "not found" in data["error"]
        url = f"{server.api}/{alice.organization_id}/events/{agent_id}/"  # alice's org in the path
        r = client.get(url, headers={"x-api-key": charlie.api_key})
        assert r.status_code == 404 and "Organization" in r.json()["detail"]
        with connect(client, server, alice, agent_id) as mine:
            stream = Stream(mine)
            worker_id = stream.next_event()[1]["id"]
            theirs = post_status(server, charlie, worker_id, beat())
            assert theirs.status_code == 404 and "Worker" in theirs.json()["detail"]
            with server.client(charlie) as api:
                assert api.get(f"/v1/agents/{agent_id}/workers").status_code == 404


def test_it_answers_bad_worker_input_with_a_clear_4xx(server, alice):
    agent_id = new_agent(server, alice)
    with httpx.Client() as client, connect(client, server, alice, agent_id) as r:
        stream = Stream(r)
        worker_id = stream.next_event()[1]["id"]
        cases = [
            (b"{not json", 400, "Malformed"),
            ([1, 2], 422, "body"),
            ({"event": "worker-dance", "data": {}}, 422, "event"),
            ({"event": "worker-capacity-update", "data": "busy"}, 422, "data"),
            ({"event": "worker-capacity-update", "data": {"is_busy": "yes"}}, 422, "data.is_busy"),
        ]
        for body, status, text in cases:
            answer = post_status(server, alice, worker_id, body)
            assert answer.status_code == status, (body, answer.text)
            assert text in answer.json()["detail"], (body, answer.text)
        unknown = post_status(server, alice, "worker-no-such", beat())
        assert unknown.status_code == 404
        wrong_agent = post_status(server, alice, worker_id, beat(), agent_id="another-agent")
        assert wrong_agent.status_code == 404
    no_key = httpx.post(f"{server.api}/{alice.organization_id}/events/{worker_id}", json=beat())
    assert no_key.status_code == 401


def test_it_refuses_a_worker_for_an_agent_the_server_runs(server, alice):
    builtin = new_agent(server, alice, framework="builtin")
    with httpx.Client() as client, connect(client, server, alice, builtin) as r:
        assert r.status_code == 409
        name, data = Stream(r).next_event()
        assert name == "worker-environment-conflict" and "only external agents" in data["error"]


def test_it_refuses_a_viewers_worker(server, alice):
    agent_id = new_agent(server, alice)
    viewer = server.account("Routes Org", "vera@routes.test", role="viewer")
    with httpx.Client() as client, connect(client, server, viewer, agent_id) as r:
        assert r.status_code == 403

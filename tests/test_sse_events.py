"""GET /{org}/agent-execution/{task_id}/events: replay, live follow, resume, close."""

from __future__ import annotations

import json
import threading
import uuid

import httpx
import pytest

pytestmark = pytest.mark.live


def read_events(response: httpx.Response) -> list[dict]:
    events, current = [], {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and "data" in current:
            events.append(current)
            current = {}
    return events


@pytest.fixture
def setup(daphne_server):
    alice = daphne_server.account("SSE Org", "alice@sse.test")
    charlie = daphne_server.account("Other SSE Org", "charlie@sse.test")
    api = daphne_server.client(alice)
    agent = api.post(
        "/v1/agents", json={"name": f"Ext {uuid.uuid4().hex[:8]}", "framework": "external"}
    ).json()
    return daphne_server, alice, charlie, api, agent


def test_it_streams_live_and_closes_after_task_finished(setup):
    server, alice, _, api, agent = setup
    task = api.post(
        f"/agent-execution/{agent['id']}", json={"input": {"text": "hi"}, "events_streaming": True}
    ).json()
    got: list[dict] = []

    def consume() -> None:
        with httpx.stream(
            "GET",
            f"{server.api}/{alice.organization_id}/agent-execution/{task['id']}/events",
            headers={"x-api-key": alice.api_key},
            timeout=30,
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            got.extend(read_events(r))

    reader = threading.Thread(target=consume)
    reader.start()
    assert (
        api.post(
            f"/agent-execution/{task['id']}/events/push",
            json=[{"type": "chunk", "data": "Hel"}, {"type": "chunk", "data": "lo"}],
        ).status_code
        == 200
    )
    r = api.patch(f"/agent-execution/{task['id']}/update", json={"status": "completed", "result": "Hello"})
    assert r.status_code == 200
    reader.join(timeout=20)
    assert not reader.is_alive(), "stream did not close after task_finished"
    types = [e["data"]["type"] for e in got]
    assert types[0] == "task_created"
    assert types[-1] == "task_finished"
    assert [e["data"]["data"] for e in got if e["data"]["type"] == "chunk"] == ["Hel", "lo"]
    assert got[-1]["data"]["data"]["result"] == "Hello"
    assert [e["id"] for e in got] == list(range(1, len(got) + 1))
    for e in got:
        assert set(e["data"]) >= {"type", "task_id", "organization_id", "time", "data"}


def test_it_resumes_after_last_event_id(setup):
    server, alice, _, api, agent = setup
    task = api.post(
        f"/agent-execution/{agent['id']}", json={"input": {"text": "hi"}, "events_streaming": True}
    ).json()
    api.post(
        f"/agent-execution/{task['id']}/events/push",
        json=[{"type": "chunk", "data": str(i)} for i in range(5)],
    )
    api.patch(f"/agent-execution/{task['id']}/update", json={"status": "completed", "result": "ok"})
    url = f"{server.api}/agent-execution/{task['id']}/events"
    with httpx.stream("GET", url, headers={"x-api-key": alice.api_key}) as r:
        everything = read_events(r)
    with httpx.stream("GET", url, headers={"x-api-key": alice.api_key, "Last-Event-ID": "3"}) as r:
        resumed = read_events(r)
    assert [e["id"] for e in resumed] == [e["id"] for e in everything if e["id"] > 3]
    assert resumed[-1]["data"]["type"] == "task_finished"


def test_a_finished_task_sends_task_finished_at_once(setup):
    server, alice, _, api, agent = setup
    task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": "hi"}}).json()
    api.delete(f"/agent-execution/{task['id']}")
    with httpx.stream(
        "GET",
        f"{server.api}/agent-execution/{task['id']}/events",
        headers={"x-api-key": alice.api_key},
        timeout=5,
    ) as r:
        events = read_events(r)
    assert events[-1]["data"]["type"] == "task_finished"
    assert events[-1]["data"]["data"]["status"] == "stopped"


def test_another_organization_cannot_stream(setup):
    server, _, charlie, api, agent = setup
    task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": "secret"}}).json()
    r = httpx.get(f"{server.api}/agent-execution/{task['id']}/events", headers={"x-api-key": charlie.api_key})
    assert r.status_code == 404
    r = httpx.get(f"{server.api}/agent-execution/{task['id']}/events")
    assert r.status_code == 401


def test_it_rejects_a_bad_last_event_id(setup):
    server, alice, _, api, agent = setup
    task = api.post(f"/agent-execution/{agent['id']}", json={"input": {"text": "x"}}).json()
    r = httpx.get(
        f"{server.api}/agent-execution/{task['id']}/events",
        headers={"x-api-key": alice.api_key, "Last-Event-ID": "abc"},
    )
    assert r.status_code == 400

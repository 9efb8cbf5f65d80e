"""An event stream's opening: subscribed first, then its caller, the task and the log's first page
read in one call on the request's thread; a refused or dropped stream leaves no subscription behind.

In process, over ASGI (console.handler.StreamingASGIHandler on the project's URLconf), with the real
in-memory channel layer and database.
"""

from __future__ import annotations

import asyncio
import gc
import json

import httpx
import pytest
from channels.layers import get_channel_layer
from django.test import RequestFactory

from console.handler import StreamingASGIHandler
from tasks_app import bus, events, sse
from tasks_app.events import follow
from tests.test_follow import QUIET, nxt, push, running, update  # noqa: F401 (running: a fixture)
from tests.test_request_path import hops  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api():
    handler = StreamingASGIHandler()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=handler), base_url="http://127.0.0.1")


async def seen(client: httpx.AsyncClient, key: str) -> None:
    """An API call with the key, so it is among the recently authenticated (what lets a stream
    subscribe before its check)."""
    assert (await client.get("/api/agents/list", headers={"x-api-key": key})).status_code == 200


def members(task_id: str) -> set:
    return set(get_channel_layer().groups.get(bus.group_name(task_id), {}))


def ids(body: str) -> list[int]:
    return [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]


@pytest.fixture
def read_thread_calls(monkeypatch) -> list[str]:
    """Every call sent to the followers' shared read threads."""
    seen: list[str] = []
    submit = events._READS.submit

    def counted(fn, /, *args, **kwargs):
        seen.append(repr(fn))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(events._READS, "submit", counted)
    return seen


async def test_a_stream_opens_in_one_call_on_its_thread(alice, running, api, hops, read_thread_calls):  # noqa: F811
    await update(alice, running, status="completed", result="done")
    async with api as client:
        await seen(client, alice.key)
        hops.clear()
        r = await client.get(f"/api/agent-execution/{running.id}/events", headers={"x-api-key": alice.key})
    assert r.status_code == 200
    assert ids(r.text) == [1, 2, 3, 4]  # created, updated; then updated, finished
    assert r.text.splitlines()[-1] == "" and "event: task_finished" in r.text
    # the key, the task and the log's first page in one call; nothing on the read threads (the
    # first page held all of a finished task's log); the close on the loop
    assert len(hops) == 1, hops
    assert read_thread_calls == []
    assert not members(running.id)


async def test_a_caller_not_seen_just_before_opens_in_two_steps_with_the_same_stream(
    alice,
    running,  # noqa: F811
    api,
    hops,  # noqa: F811
    read_thread_calls,
):
    """A key the server has not just authenticated costs no channel-layer work before its check:
    the stream checks it, then subscribes and reads (the two-step opening), and streams the same."""
    await update(alice, running, status="completed", result="done")
    async with api as client:
        r = await client.get(f"/api/agent-execution/{running.id}/events", headers={"x-api-key": alice.key})
    assert ids(r.text) == [1, 2, 3, 4]
    assert len(hops) == 1 and len(read_thread_calls) == 1, (hops, read_thread_calls)
    assert not members(running.id)


async def test_a_stream_resumes_after_its_last_event_id_from_the_same_call(alice, running, api):  # noqa: F811
    await update(alice, running, status="completed", result="done")
    async with api as client:
        await seen(client, alice.key)
        r = await client.get(
            f"/api/agent-execution/{running.id}/events",
            headers={"x-api-key": alice.key, "Last-Event-ID": "2"},
        )
    assert ids(r.text) == [3, 4]


async def test_the_follow_takes_over_a_subscription_made_before_its_first_read(alice, running):  # noqa: F811
    """An event committed after the first page was read, while subscribed, arrives live: nothing
    falls between the caller's read and the follow."""
    subscription = await events.subscribe(running.id)
    first = await events.aread(running.id, 0)
    await push(alice, running, "after the read")
    items = follow(running.id, 0, keepalive=QUIET, subscription=subscription, first_read=first)
    assert [e["seq"] for e in await nxt(items)] == [1, 2]
    live = await nxt(items)
    assert [(e["seq"], e["type"]) for e in live] == [(3, "chunk")]
    await items.aclose()
    assert not members(running.id)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": "xpk_unknown"}, 401),
        ({"x-api-key": "", "Last-Event-ID": "1"}, 401),
        ({"Last-Event-ID": "not a number"}, 400),
        ({"Last-Event-ID": "-1"}, 400),
    ],
)
async def test_a_refused_stream_leaves_no_subscription(alice, running, api, headers, status):  # noqa: F811
    headers = {"x-api-key": alice.key, **headers}
    async with api as client:
        await seen(client, alice.key)  # the refusals of a caller just seen go through the early path
        r = await client.get(f"/api/agent-execution/{running.id}/events", headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert not members(running.id)


async def test_another_organizations_stream_is_a_404_and_leaves_no_subscription(alice, charlie, running, api):  # noqa: F811
    async with api as client:
        await seen(client, charlie.key)
        r = await client.get(f"/api/agent-execution/{running.id}/events", headers={"x-api-key": charlie.key})
    assert r.status_code == 404
    assert not members(running.id)


async def test_a_well_formed_id_of_no_task_is_a_404_and_leaves_no_subscription(alice, api):
    async with api as client:
        await seen(client, alice.key)
        r = await client.get("/api/agent-execution/nosuchtask/events", headers={"x-api-key": alice.key})
    assert r.status_code == 404 and "not found" in r.json()["detail"]
    assert not members("nosuchtask")


async def test_a_key_at_its_stream_limit_gets_its_429_before_the_log_is_read(
    alice,
    running,  # noqa: F811
    api,
    settings,
    read_thread_calls,
):
    settings.SSE_MAX_STREAMS_PER_KEY = 0
    async with api as client:
        await seen(client, alice.key)
        r = await client.get(f"/api/agent-execution/{running.id}/events", headers={"x-api-key": alice.key})
    assert r.status_code == 429 and "open event streams" in r.json()["detail"]
    assert read_thread_calls == [] and not members(running.id)


@pytest.mark.parametrize("task_id", ["no such task", "%E2%9C%93", "x" * 200])
async def test_a_task_id_that_names_no_task_is_a_404(alice, api, task_id):
    async with api as client:
        r = await client.get(f"/api/agent-execution/{task_id}/events", headers={"x-api-key": alice.key})
    assert r.status_code == 404, r.text
    assert "not found" in r.json()["detail"]


async def test_a_stream_dropped_before_its_first_read_leaves_its_group(alice, running, api):  # noqa: F811
    async with api as client:
        await seen(client, alice.key)
    request = RequestFactory().get(f"/api/agent-execution/{running.id}/events", HTTP_X_API_KEY=alice.key)
    response = await sse.task_events(request, running.id)
    assert response.status_code == 200 and members(running.id)
    del response
    gc.collect()
    for _ in range(50):
        if not members(running.id):
            break
        await asyncio.sleep(0.01)
    assert not members(running.id)


def test_every_stream_frame_is_json_after_the_opening(alice, running):  # noqa: F811
    """The opening's page is framed as every later one (sse.frame): one JSON envelope per frame."""
    page, status = sse.events.read_after_row(running.id, 0, running.status, running.last_seq)
    assert status == running.status and [e["seq"] for e in page] == [1, 2]
    body = "".join(sse.frame(running.id, running.organization_id, e) for e in page)
    datas = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in datas] == ["task_created", "task_updated"]


@pytest.mark.parametrize(
    "value",
    [
        {"text": "plain", "n": 1, "f": 0.5, "none": None, "list": [1, "two", {"three": True}]},
        {"text": "ünïcödé ☃ and a \u2028 line separator", "nested": {"quote": '"', "slash": "\\"}},
        {"control": "tab\tnew\nline\x00nul", "big": 2**60, "neg": -3.25e-7},
    ],
)
def test_a_frames_json_reads_back_as_the_standard_librarys(value):
    assert json.loads(sse.compact_json(value)) == json.loads(json.dumps(value)) == value
    assert "\n" not in sse.compact_json(value)  # one data line per frame


def test_a_value_pydantic_core_will_not_encode_is_encoded_as_before():
    lone = {"text": "a lone \ud800 surrogate"}
    assert sse.compact_json(lone) == json.dumps(lone, separators=(",", ":"))

"""task.events() and task.aevents(): live, typed, ending after task_finished."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime

import pytest

from tasks_app.client import AgentExecutionStatus, Task, Tasks, TaskUpdateEventType
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live

FINAL = {"completed", "failed", "error", "stopped"}


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def test_the_sync_iterator_yields_before_the_task_finishes(setup):
    task = Tasks(setup.configuration).create(setup.agent["id"], prompt="stream", events_streaming=True)
    consumer_saw_chunk = threading.Event()
    worker_waited: list[bool] = []

    def worker() -> None:
        setup.push(task, ("chunk", "Hel"))
        worker_waited.append(consumer_saw_chunk.wait(timeout=15))
        setup.push(task, ("chunk", "lo"))
        setup.finish(task, "Hello")

    thread = threading.Thread(target=worker)
    thread.start()
    events, status_when_seen = [], None
    for event in task.events():
        events.append(event)
        if event.type == "chunk" and not consumer_saw_chunk.is_set():
            status_when_seen = setup.raw(task)["status"]
            consumer_saw_chunk.set()
    thread.join(timeout=15)

    assert worker_waited == [True], "the first chunk only arrived once the task had finished"
    assert status_when_seen not in FINAL
    assert [e.type for e in events] == ["task_created", "chunk", "chunk", "task_updated", "task_finished"]
    assert [e.data for e in events if e.type == "chunk"] == ["Hel", "lo"]
    assert [e.id for e in events] == [1, 2, 3, 4, 5]


def test_events_are_typed(setup):
    task = Tasks(setup.configuration).create(setup.agent["id"], prompt="typed", events_streaming=True)
    setup.push(task, ("think", {"title": "Plan", "thought": "look it up"}), ("plan_updated", {"tasks": []}))
    setup.finish(task, "ok")
    events = list(task.events())
    created, think, *_, finished = events
    assert created.type is TaskUpdateEventType.TaskCreated and created.type == "task_created"
    assert isinstance(created.data, Task) and created.data.status == AgentExecutionStatus.Pending
    assert isinstance(created.time, datetime) and created.time.tzinfo is not None
    assert created.task_id == task.id and created.organization_id == task.organization_id
    assert think.type == "think" and think.data == {"title": "Plan", "thought": "look it up"}
    assert finished.type == "task_finished"
    assert isinstance(finished.data, Task)
    assert finished.data.status == "completed" and finished.data.result == "ok"
    # the Task inside an event is live: it can act on the server
    assert finished.data.get_activity_log().id == task.id


def test_a_finished_task_replays_its_history_and_ends(setup):
    task = Tasks(setup.configuration).create(setup.agent["id"], prompt="already over")
    task.stop()
    types = [e.type for e in task.events()]
    assert types[0] == "task_created" and types[-1] == "task_finished"


async def test_aevents_yield_live(setup):
    task = await Tasks(setup.configuration).acreate(setup.agent["id"], prompt="async", events_streaming=True)
    first_chunk = asyncio.Event()

    async def worker() -> None:
        await asyncio.to_thread(setup.push, task, ("chunk", "a"))
        await asyncio.wait_for(first_chunk.wait(), timeout=15)
        await asyncio.to_thread(
            setup.push, task, ("tool_call_request", {"tool_name": "t", "payload": {"k": 1}})
        )
        await asyncio.to_thread(setup.finish, task, "async done")

    running = asyncio.create_task(worker())
    seen = []
    async for event in task.aevents():
        seen.append(event)
        if event.type == "chunk":
            assert (await asyncio.to_thread(setup.raw, task))["status"] not in FINAL
            first_chunk.set()
    await running
    assert [e.type for e in seen] == [
        "task_created",
        "chunk",
        "tool_call_request",
        "task_updated",
        "task_finished",
    ]
    assert seen[-1].data.result == "async done"


async def test_breaking_out_of_aevents_closes_the_stream(setup):
    task = await Tasks(setup.configuration).acreate(setup.agent["id"], prompt="leave early")
    stream = task.aevents()
    async for event in stream:
        assert event.type == "task_created"
        break
    await stream.aclose()
    setup.finish(task)

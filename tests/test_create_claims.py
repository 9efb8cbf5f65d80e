"""In the embedded default, a built-in agent's create claims its task for this process's pool in its
own transaction (dispatch.take_seat); a full or stopping pool leaves the task to the queue as before."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.access import SYSTEM, Actor
from console.models import Agent
from tasks_app import actions, dispatch
from tasks_app.models import Task, TaskEvent
from tasks_app.runtime.worker import WorkerPool
from tasks_app.schemas import TaskCreateIn
from tests.tools.scripted_model import Turn

pytestmark = pytest.mark.django_db(transaction=True)  # the pool's threads read committed rows only


@pytest.fixture
def agent(alice, scripted_model) -> Agent:
    r = alice.post(
        "/api/v1/agents",
        {
            "name": "Seated",
            "framework": "builtin",
            "model_provider": "openai_compatible",
            "model_name": "scripted",
            "model_base_url": scripted_model.base_url,
            "model_api_key": "sk-model",
        },
    )
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def create(alice, agent: Agent, text: str) -> tuple[Task, list[str]]:
    """The task API's create, as the runtime's sub-agents call it; (the task as created, the SQL it ran)."""
    actor = Actor(alice.org.id, SYSTEM)
    with CaptureQueriesContext(connection) as ctx:
        task = actions.create_task(actor, agent.id, TaskCreateIn(input={"text": text}, events_streaming=True))
    return task, [q["sql"] for q in ctx.captured_queries]


def claimed_in(sql: list[str]) -> bool:
    return any(s.startswith('UPDATE "tasks_app_task" SET "status"') for s in sql)


async def until(check, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await sync_to_async(check)():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def events(task_id: str) -> list[tuple[int, str, str]]:
    return [
        (e.seq, e.type, e.data.get("status", "") if isinstance(e.data, dict) else "")
        for e in TaskEvent.objects.filter(task_id=task_id).order_by("seq")
    ]


async def test_a_create_claims_its_task_for_the_pool_and_the_run_starts_from_it(alice, agent, scripted_model):
    scripted_model.set_script([Turn.reply("Seated.")])
    pool = WorkerPool(concurrency=2)
    await pool.start()
    try:
        task, sql = await sync_to_async(create)(alice, agent, "hello")
        assert task.status == "pending"  # the create answers with the task as created
        assert claimed_in(sql)  # ...and claimed it in the same transaction: no claim on the writer
        await until(lambda: Task.objects.get(pk=task.id).status == "completed")
    finally:
        await pool.stop()
    done = await Task.objects.aget(pk=task.id)
    assert (done.result, done.attempts, done.lease_owner) == ("Seated.", 1, "")
    seen = await sync_to_async(events)(task.id)
    assert seen[:2] == [(1, "task_created", "pending"), (2, "task_updated", "executing")]
    assert [t for _, t, _ in seen].count("task_updated") == 2  # claimed once, finished once: one run
    assert seen[-1][1:] == ("task_finished", "completed")
    assert scripted_model.errors == [] and pool._seats == 0


async def test_a_full_pool_takes_no_seat_and_the_task_waits_for_the_queue(
    alice, agent, scripted_model, settings
):
    settings.WORKER_POLL_SECONDS = 0.2
    scripted_model.set_script([Turn.reply("Queued.")])
    pool = WorkerPool(concurrency=1)
    await pool.start()
    try:
        seat = dispatch.take_seat()
        assert seat is not None and dispatch.take_seat() is None  # one slot, now set aside
        task, sql = await sync_to_async(create)(alice, agent, "wait")
        assert not claimed_in(sql)
        await asyncio.sleep(0.5)  # hinted and polled, but the pool is full
        assert (await Task.objects.aget(pk=task.id)).status == "pending"
        seat.give_back()
        seat.give_back()  # a seat is settled once
        assert pool._seats == 0
        await until(lambda: Task.objects.get(pk=task.id).status == "completed")
    finally:
        await pool.stop()
    assert (await Task.objects.aget(pk=task.id)).result == "Queued."


async def test_a_seat_taken_up_after_the_pool_stopped_hands_its_task_back(alice, agent):
    """The create committed, but the pool stopped before its run could start: the task goes back to
    the queue (pending, no lease), as a shutdown hands back its runs."""
    pool = WorkerPool(concurrency=2)
    await pool.start()
    seat = pool.take_seat()
    assert seat is not None
    await pool.stop()
    assert pool.take_seat() is None  # stopping: no new seats
    task, sql = await sync_to_async(create)(alice, agent, "late")  # no pool now: left to the queue
    assert not claimed_in(sql)
    claimed = await actions.aclaim_task(task.id, pool.worker_id, 60)  # as if its create had claimed it
    seat.start(claimed)
    await until(lambda: Task.objects.get(pk=task.id).status == "pending")
    back = await Task.objects.aget(pk=task.id)
    assert (back.lease_owner, back.lease_expires_at) == ("", None)
    assert pool._seats == 0

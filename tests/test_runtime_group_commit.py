"""The runtime's writes go through one writer per process that commits many at once (group commit):
a failing write fails only its caller, the others' events are stored and then published in order;
and a pool renews all its leases in one statement, learning which runs it lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from tasks_app import actions, bus
from tasks_app.models import ActivityEntry, ActivityKind, Task, TaskEvent


def said(text: str) -> tuple[str, dict]:
    return ActivityKind.MESSAGE, {"role": "agent", "content": {"text": text}}


@pytest.mark.django_db(transaction=True)
async def test_one_failing_write_in_a_group_fails_only_its_caller(task_of):
    tasks = [await sync_to_async(task_of)(f"t{i}") for i in range(4)]
    ids = [t["id"] for t in tasks]
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for task_id in ids:
        await layer.group_add(bus.group_name(task_id), channel)
    for task_id in ids:
        assert await actions.aclaim_task(task_id, "w1", 30) is not None
    bad = ids[1]
    before = await Task.objects.aget(pk=bad)
    entries = await ActivityEntry.objects.filter(task_id=bad).acount()
    others = await ActivityEntry.objects.filter(task_id=ids[2]).acount()

    # Queued together: the writer runs whatever is waiting in one transaction, one savepoint each.
    results = await asyncio.gather(
        actions.arecord_progress(ids[0], events=[("chunk", "a")], worker_id="w1"),
        # The activity row goes in first, then the event cannot be stored: both must be undone.
        actions.arecord_progress(bad, activity=[said("half")], events=[("chunk", object())], worker_id="w1"),
        actions.arecord_progress(ids[2], events=[("chunk", "c")], activity=[said("c")], worker_id="w1"),
        actions.afinish_task(ids[3], "completed", "done", worker_id="w1"),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception)
    assert [r.data for r in results[0]] == ["a"] and [r.data for r in results[2]] == ["c"]
    assert results[3].status == "completed"

    after = await Task.objects.aget(pk=bad)
    assert (after.last_seq, after.last_activity) == (before.last_seq, before.last_activity)
    assert await ActivityEntry.objects.filter(task_id=bad).acount() == entries
    assert await ActivityEntry.objects.filter(task_id=ids[2]).acount() == others + 1

    # Everything stored was published, nothing of the failed write; per task in seq order.
    seen: dict[str, list[int]] = {}
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=0.5)
        except TimeoutError:
            break
        if message.get("type") == "task.events":
            seen.setdefault(message["task_id"], []).extend(e["seq"] for e in message["events"])
    for task_id in ids:
        stored = [
            seq
            async for seq in TaskEvent.objects.filter(task_id=task_id, seq__gt=1)
            .order_by("seq")
            .values_list("seq", flat=True)
        ]
        assert [s for s in seen.get(task_id, []) if s > 1] == stored
    assert bad not in seen or all(s <= before.last_seq for s in seen[bad])


def test_a_pool_renews_its_leases_in_one_statement_and_learns_the_runs_it_lost(task_of):
    ids = [task_of(f"t{i}")["id"] for i in range(4)]
    for task_id in ids:
        assert actions.claim_task(task_id, "w1", 1) is not None
    kept, stopped, taken, other = ids
    actions.stop_task(actions.Actor(Task.objects.get(pk=stopped).organization_id, "owner"), stopped)
    Task.objects.filter(pk=taken).update(lease_owner="w2")  # reaped and claimed by another worker
    Task.objects.filter(pk=other).update(lease_owner="w3")

    lost = actions.renew_leases("w1", 60, [kept, stopped, taken])
    assert lost == [stopped, taken]
    leases = dict(Task.objects.filter(pk__in=ids).values_list("id", "lease_expires_at"))
    soon = timezone.now() + timedelta(seconds=30)
    assert leases[kept] > soon  # renewed
    assert leases[other] < soon and leases[taken] < soon  # another worker's leases are not touched
    assert Task.objects.get(pk=stopped).lease_expires_at is None or leases[stopped] < soon


def _savepoints(queries: list[dict]) -> int:
    return sum(1 for q in queries if q["sql"].startswith("SAVEPOINT"))


@pytest.mark.django_db
def test_a_grouped_write_runs_in_the_one_savepoint_the_group_gives_it(task_of):
    """In the group's transaction a claim, a progress batch and a finish each open one savepoint (the
    group's, which a failure rolls back to), not a second one of their own; called on their own they
    still open theirs."""
    from types import SimpleNamespace

    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from tasks_app.actions import log

    task_id = task_of("grouped")["id"]
    writes = [
        (actions.claim_task.__wrapped__, (task_id, "w1", 30), {}),
        (actions.record_progress.__wrapped__, (task_id,), {"events": [("chunk", "a")], "worker_id": "w1"}),
        (actions.finish_task.__wrapped__, (task_id, "completed", "done"), {"worker_id": "w1"}),
    ]
    for fn, args, kwargs in writes:
        item = SimpleNamespace(fn=fn, args=args, kwargs=kwargs, outbox=[], result=None, error=None)
        with transaction.atomic(), CaptureQueriesContext(connection) as ctx:  # the group's transaction
            log._apply(item)
        assert item.error is None and item.result and item.outbox, fn.__name__
        assert _savepoints(ctx.captured_queries) == 1, fn.__name__
    assert Task.objects.get(pk=task_id).status == "completed"

    other = task_of("alone")["id"]
    with transaction.atomic(), CaptureQueriesContext(connection) as ctx:  # a caller's transaction
        assert actions.claim_task(other, "w1", 30) is not None
    assert _savepoints(ctx.captured_queries) == 1

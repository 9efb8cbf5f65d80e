"""The one follow of a task's events (tasks_app.events), with the real in-memory channel layer and DB.

Replay after N; live through the channel layer; a lost message filled from the log; keep-alive ticks
and the log read after them; the end (a final status, or a turn's task_finished); access lost; waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from asgiref.sync import sync_to_async

from console.web.session import actor_for_membership
from tasks_app import actions, events
from tasks_app.events import KEEPALIVE, AccessEnded, Until, follow, wait_until_finished
from tasks_app.schemas import TaskUpdateIn
from tests.test_console_history import agent, make

pytestmark = pytest.mark.django_db(transaction=True)
QUIET = 30.0  # longer than any test waits: what arrives came through the channel layer, not a tick


@pytest.fixture
def running(alice):
    """An external agent's task, executing: seq 1 task_created, seq 2 task_updated."""
    return make(alice, agent(alice.org, "Writer"), "hello", status="executing")


@pytest.fixture
def small_channels(settings):
    """A follower's channel holds 2 messages; later ones are dropped, as a slow follower's are."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "console.channel_layer.SweepingInMemoryChannelLayer",
            "CONFIG": {"capacity": 2},
        }
    }


async def push(persona, task, *chunks: str) -> None:
    """Each chunk in its own transaction, so each is its own channel-layer message."""
    for chunk in chunks:
        await sync_to_async(actions.push_events)(
            actor_for_membership(persona.member), task.id, [("chunk", chunk)]
        )


async def update(persona, task, **fields: str) -> None:
    await sync_to_async(actions.update_task)(
        actor_for_membership(persona.member),
        task.id,
        TaskUpdateIn(**fields),
        fields=set(fields),
        full_dump=False,
    )


async def nxt(items: AsyncGenerator) -> object:
    async with asyncio.timeout(5):
        return await anext(items)


async def rest(items: AsyncGenerator) -> list:
    """Every item until the follow ends (it must end within 5 s)."""
    async with asyncio.timeout(5):
        return [item async for item in items]


def seqs(batches: list) -> list[int]:
    return [e["seq"] for batch in batches for e in batch]


async def test_it_replays_the_log_after_n_and_ends_on_a_finished_task(alice, running):
    await push(alice, running, "a", "b")
    await update(alice, running, status="completed")
    got = await rest(follow(running.id, 2, keepalive=QUIET))
    assert seqs(got) == [3, 4, 5, 6]
    assert [e["type"] for e in got[0]] == ["chunk", "chunk", "task_updated", "task_finished"]
    assert set(got[0][0]) == {"seq", "type", "time", "data"} and got[0][0]["data"] == "a"


async def test_it_pages_through_the_log(alice, running, monkeypatch):
    monkeypatch.setattr(events, "PAGE", 2)
    await push(alice, running, "a", "b", "c")
    await update(alice, running, status="completed")
    got = await rest(follow(running.id, 0, keepalive=QUIET))
    assert [len(batch) for batch in got] == [2, 2, 2, 1]
    assert seqs(got) == list(range(1, 8))


async def test_its_first_item_is_the_first_page_even_when_empty(alice, running):
    items = follow(running.id, 2, keepalive=QUIET)
    assert await nxt(items) == []
    await items.aclose()


async def test_it_follows_live_events_then_ends_when_the_task_is_finished(alice, running):
    items = follow(running.id, 0, keepalive=QUIET)
    assert seqs([await nxt(items)]) == [1, 2]
    await push(alice, running, "live")
    live = await nxt(items)
    assert [(e["seq"], e["data"]) for e in live] == [(3, "live")]
    await update(alice, running, status="completed")
    tail = await rest(items)
    assert [e["type"] for batch in tail for e in batch] == ["task_updated", "task_finished"]


async def test_it_fills_a_gap_from_the_log(alice, running, small_channels):
    items = follow(running.id, 0, keepalive=QUIET)
    await nxt(items)  # subscribed, the log read
    await push(alice, running, "3", "4", "5", "6", "7")  # messages 3 and 4 kept, 5 to 7 dropped
    assert seqs([await nxt(items)]) == [3]
    assert seqs([await nxt(items)]) == [4]
    await push(alice, running, "8")  # its message comes after a gap: the log fills it, in one batch
    assert seqs([await nxt(items)]) == [5, 6, 7, 8]
    await items.aclose()


async def test_it_ticks_when_quiet_and_reads_the_log_after_the_tick(alice, running, small_channels):
    items = follow(running.id, 0, keepalive=0.3)
    await nxt(items)
    await push(alice, running, "3", "4", "5")  # message 5 dropped, and nothing comes after it
    assert seqs([await nxt(items), await nxt(items)]) == [3, 4]
    assert await nxt(items) is KEEPALIVE
    assert seqs([await nxt(items)]) == [5]
    assert await nxt(items) is KEEPALIVE
    await items.aclose()


async def test_it_ends_on_a_final_status_even_when_the_log_goes_on_after_task_finished(alice, running):
    await update(alice, running, status="completed")
    await update(alice, running, title="Renamed afterwards")  # a task_updated after task_finished
    got = await rest(follow(running.id, 0, keepalive=QUIET))
    assert [e["type"] for e in got[-1]][-2:] == ["task_finished", "task_updated"]


async def test_a_live_finish_ends_the_follow_without_reading_the_log_again(alice, running):
    """A finish's commit ends with its task_finished: when its message continues the log, the
    follow ends there (what a later commit appends, here a rename, is not waited for)."""
    items = follow(running.id, 0, keepalive=QUIET)
    assert seqs([await nxt(items)]) == [1, 2]  # subscribed, the log read
    await update(alice, running, status="completed")
    await update(alice, running, title="Renamed afterwards")  # seq 5, in the log before we look
    tail = await rest(items)
    assert [(e["seq"], e["type"]) for batch in tail for e in batch] == [
        (3, "task_updated"),
        (4, "task_finished"),
    ]


async def test_in_turn_mode_it_ends_right_after_the_turns_task_finished(alice, running):
    items = follow(running.id, 2, until=Until.TASK_FINISHED, keepalive=QUIET)
    assert await nxt(items) == []
    await update(alice, running, status="completed")
    tail = await rest(items)
    assert [e["type"] for batch in tail for e in batch] == ["task_updated", "task_finished"]
    replay = await rest(follow(running.id, 0, until=Until.TASK_FINISHED, keepalive=QUIET))
    assert seqs(replay) == [1, 2, 3, 4]


async def test_it_ends_when_the_follower_loses_access(alice, running):
    asked = []

    async def still_allowed() -> bool:
        asked.append(True)
        return len(asked) < 2

    items = follow(running.id, 0, still_allowed=still_allowed, keepalive=0.2)
    await nxt(items)
    assert await nxt(items) is KEEPALIVE  # the first beat: still allowed
    with pytest.raises(AccessEnded):
        await nxt(items)
    assert len(asked) == 2


async def test_it_leaves_the_group_however_it_ends(alice, running):
    from channels.layers import get_channel_layer

    from tasks_app import bus

    items = follow(running.id, 0, keepalive=QUIET)
    await nxt(items)
    assert get_channel_layer().groups.get(bus.group_name(running.id))
    await items.aclose()
    assert not get_channel_layer().groups.get(bus.group_name(running.id))


async def test_wait_until_finished_returns_once_the_task_has_a_final_status(alice, running):
    waiting = asyncio.create_task(wait_until_finished(running, timeout=5, poll=QUIET))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await push(alice, running, "still working")
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await update(alice, running, status="failed")
    assert await waiting is True


async def test_wait_until_finished_gives_up_after_its_timeout(alice, running):
    started = asyncio.get_running_loop().time()
    # No re-read is in flight when it gives up: a read cut off would race the test's teardown.
    assert await wait_until_finished(running, timeout=0.3, poll=QUIET) is False
    assert 0.3 <= asyncio.get_running_loop().time() - started < 2


async def test_wait_until_finished_returns_at_once_for_a_finished_task(alice, running):
    await update(alice, running, status="completed")
    assert await wait_until_finished(running, timeout=5, poll=QUIET) is True


def test_a_re_read_with_nothing_new_costs_one_query(alice, running, django_assert_num_queries):
    """Quiet keep-alive ticks and waits re-read often: with no new event, only the task's row is read."""
    running.refresh_from_db()
    with django_assert_num_queries(1):
        assert events._read(running.id, running.last_seq) == ([], "executing")
    with django_assert_num_queries(2):
        got, status = events._read(running.id, 0)
    assert [e["seq"] for e in got] == list(range(1, running.last_seq + 1)) and status == "executing"


# Quiet followers share their beats: one read answers every follower that beats at that instant.


def test_beats_fall_on_one_grid_whatever_the_start():
    beat = 15.0
    assert events.next_beat_of(100.0, beat) == events.next_beat_of(104.9, beat) == 105.0
    assert events.next_beat_of(105.0, beat) == 120.0  # always after now
    assert events.next_beat_of(7.0, 0) == 7.0  # no beat: as before, at once


async def test_a_batch_answers_every_caller_of_one_turn_with_one_fetch():
    calls: list[list[str]] = []

    def fetch(keys: list[str]) -> dict[str, int]:
        calls.append(sorted(keys))
        return {k: len(k) for k in keys if k != "gone"}

    batched = events.Batched(fetch, -1)
    got = await asyncio.gather(*(batched.get(k) for k in ["a", "bb", "a", "gone"]))
    assert got == [1, 2, 1, -1]
    assert calls == [["a", "bb", "gone"]]  # one read, each key once
    assert await batched.get("ccc") == 3 and len(calls) == 2  # a later turn: its own read


async def test_a_batch_reads_a_page_of_keys_at_a_time_and_fails_only_the_failed_page(monkeypatch):
    monkeypatch.setattr(events, "PAGE", 2)

    def fetch(keys: list[str]) -> dict[str, str]:
        if "bad" in keys:
            raise RuntimeError("the database went away")
        return {k: k.upper() for k in keys}

    batched = events.Batched(fetch, "")
    got = await asyncio.gather(*(batched.get(k) for k in ["a", "b", "bad", "c"]), return_exceptions=True)
    assert got[:2] == ["A", "B"]
    assert all(isinstance(g, RuntimeError) for g in got[2:])


async def test_a_batch_cancelled_midway_leaves_no_caller_waiting():
    import threading

    release = threading.Event()

    def fetch(keys: list[str]) -> dict[str, int]:
        release.wait(5)
        return {}

    batched = events.Batched(fetch, 0)
    caller = asyncio.create_task(batched.get("a"))
    try:
        while not batched._flushing:
            await asyncio.sleep(0.005)
        for flush in list(batched._flushing):  # the loop shutting down cancels it
            flush.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 2)
    finally:
        release.set()


async def test_quiet_followers_of_different_tasks_check_their_keys_in_one_read(alice, running):
    other = await sync_to_async(make)(alice, running.agent, "second", status="executing")
    asked: list[list[int]] = []

    def fetch(ids: list[int]) -> dict[int, bool]:
        asked.append(sorted(ids))
        return dict.fromkeys(ids, True)

    beat, loop = 0.5, asyncio.get_running_loop()
    keys = events.Batched(fetch, False)
    first = follow(running.id, 0, keepalive=beat, still_allowed=lambda: keys.get(1))
    second = follow(other.id, 0, keepalive=beat, still_allowed=lambda: keys.get(2))
    await nxt(first)
    await nxt(second)
    while loop.time() % beat > 0.05:  # start just after a grid point: both starts in one period
        await asyncio.sleep(0.005)
    waiting_first = asyncio.create_task(nxt(first))  # live now, its beat set
    await asyncio.sleep(0.15)  # the second goes live later; a beat from its own start would differ
    waiting_second = asyncio.create_task(nxt(second))
    assert await asyncio.gather(waiting_first, waiting_second) == [KEEPALIVE, KEEPALIVE]
    assert asked == [[1, 2]]
    await first.aclose()
    await second.aclose()


async def test_a_quiet_beat_that_finds_a_final_status_reads_the_log_and_ends(alice, running, small_channels):
    items = follow(running.id, 0, keepalive=0.3)
    await nxt(items)
    await push(alice, running, "3", "4", "5")  # message 5 dropped
    await update(alice, running, status="completed")  # and its messages too: the channel is full
    batches = [item for item in await rest(items) if item is not KEEPALIVE]
    got = [e for batch in batches for e in batch]
    assert [e["seq"] for e in got] == list(range(3, got[-1]["seq"] + 1))
    assert got[-1]["type"] == "task_finished"

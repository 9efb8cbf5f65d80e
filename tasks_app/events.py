"""One follow of a task's events: the durable log after a point, then live until the task is finished.

Every transport (SSE, the console's websocket) and every wait (stop-and-wait, sub-agent waits) uses
`follow`. Its rules: subscribe to the task's channel-layer group BEFORE reading the log, so nothing
falls between the two; page through the log; trust a group message only when it continues exactly
where the last event left off; on a gap, a quiet period or a final status, the log decides (but a
final status whose message ends with the finish's own task_finished ends the follow at once). Reads run
on a few shared threads (SSE_READ_THREADS), so a follower costs no thread and no DB connection.

Quiet followers cost one query per beat between all of them, not two each: keep-alive beats fall on
a shared grid (every follower of the process beats at the same instants), and what a beat asks (has
the task's log moved? is the caller still allowed?) is answered for every follower at once by one
batched read (`Batched`). 2,000 waiting followers were ~270 queries a second before.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import math
import re
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, Generic, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connections

from console.prepared import KeyedList, KeyedRead
from tasks_app import actions, bus, live_receive, wire
from tasks_app.models import TERMINAL_STATUSES, Task, TaskEvent

PAGE = 500
P = ParamSpec("P")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Envelope = dict[str, Any]  # wire.envelope: {"seq", "type", "time", "data"}


class Until(enum.Enum):
    """When a follow ends (it has always yielded every event up to that point)."""

    FINAL_STATUS = "final_status"  # the task has a final status: SSE, waits
    TASK_FINISHED = "task_finished"  # a task_finished ends what was yielded: the websocket, once per turn


class Tick:
    """A keep-alive beat passed without a message: SSE writes a comment, others may ignore it."""

    def __repr__(self) -> str:
        return "KEEPALIVE"


KEEPALIVE = Tick()


class AccessEnded(Exception):
    """`still_allowed` said no: the follower lost access (a revoked key)."""


# Every follower reads through these few threads, so followers add no thread or DB connection each.
_READS = ThreadPoolExecutor(max_workers=settings.SSE_READ_THREADS, thread_name_prefix="sse-read")


def on_read_threads(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine on the followers' shared read threads."""

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connections.close_all()  # these threads live long: reconnect on the next read
            raise

    return sync_to_async(run, thread_sensitive=False, executor=_READS)


def _read(task_id: str, after: int) -> tuple[list[Envelope], str]:
    # Status first: a final status commits with its events, so reading the log after it sees them all.
    try:
        row = _STATUS.get(task_id)  # every follower's first read and each of its ticks: compiled once
        status, last_seq = row.status, row.last_seq
    except Task.DoesNotExist:
        status, last_seq = "failed", 0
    return read_after_row(task_id, after, status, last_seq)


def read_after_row(task_id: str, after: int, status: str, last_seq: int) -> tuple[list[Envelope], str]:
    """The log's page after `after`, the task's row (status, last_seq) read just before it."""
    if last_seq <= after:  # last_seq commits with the events: nothing new, so no log query (a quiet tick)
        return [], status
    # A new follower reads the log from its start (most streams): that read is compiled once.
    rows = _log_start(PAGE).all(task_id) if after == 0 else actions.events_after(task_id, after, limit=PAGE)
    return [wire.envelope(r) for r in rows], status


@functools.cache  # by page size: a compiled read keeps the slice it was compiled with
def _log_start(page: int) -> KeyedList[TaskEvent]:
    return KeyedList(
        TaskEvent, lambda task_id: TaskEvent.objects.filter(task_id=task_id).order_by("seq")[:page]
    )


_STATUS = KeyedRead(Task, lambda task_id: Task.objects.only("status", "last_seq").filter(pk=task_id))
aread = on_read_threads(_read)


class Batched(Generic[K, V]):
    """One read for every caller of the same loop turn: `await batched.get(key)`.

    Callers that ask in the same turn of the event loop (followers whose beats fell on the same
    instant) are answered by one call of `fetch(keys)` on the read threads, PAGE keys at a time; a
    key `fetch` leaves out gets `missing`. An error reaches every caller of its batch.
    """

    def __init__(self, fetch: Callable[[list[K]], dict[K, V]], missing: V) -> None:
        self._fetch = on_read_threads(fetch)
        self._missing = missing
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, list[asyncio.Future[V]]]]
        self._pending = weakref.WeakKeyDictionary()
        self._flushing: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def get(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = {}
            loop.call_soon(self._start_flush, loop)
        future: asyncio.Future[V] = loop.create_future()
        pending.setdefault(key, []).append(future)
        return await future

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._flush(loop))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending.pop(loop, {})
        keys = list(pending)
        try:
            for start in range(0, len(keys), PAGE):
                page = keys[start : start + PAGE]
                try:
                    found = await self._fetch(page)
                except Exception as exc:
                    for key in page:
                        for future in pending[key]:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for key in page:
                    for future in pending[key]:
                        if not future.done():  # its follower may have gone meanwhile
                            future.set_result(found.get(key, self._missing))
        finally:  # cancelled (the loop shutting down): no caller is left waiting
            for futures in pending.values():
                for future in futures:
                    if not future.done():
                        future.cancel()


def _rows(task_ids: list[str]) -> dict[str, tuple[str, int]]:
    return {
        pk: (status, last_seq)
        for pk, status, last_seq in Task.objects.filter(pk__in=task_ids).values_list(
            "id", "status", "last_seq"
        )
    }


# (status, last_seq) of the tasks whose followers beat now: one query for all of them.
ROWS: Batched[str, tuple[str, int]] = Batched(_rows, ("failed", 0))


_GROUP_SAFE = re.compile(r"[A-Za-z0-9._-]{1,90}")


class Subscription:
    """A follower's channel on the channel layer, in the task's group: made before the log is read.

    `subscribe` makes one; `follow` takes it over (and leaves the group when it ends). A caller that
    subscribes and then does not follow (its caller refused) calls `close`.
    """

    def __init__(self, layer: Any, channel: str, group: str) -> None:
        self.layer, self.channel, self.group = layer, channel, group
        self.closed = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.layer.group_discard(self.group, self.channel)

    def close_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """`close` from anywhere (a finalizer: a follow dropped before it started, so never closed)."""
        if not self.closed and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to leave
                loop.call_soon_threadsafe(_spawn, loop, self.close)


_closing: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def _spawn(loop: asyncio.AbstractEventLoop, make: Callable[[], Any]) -> None:
    task = loop.create_task(make())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def subscribe(task_id: str) -> Subscription:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = bus.group_name(task_id)
    await layer.group_add(group, channel)
    return Subscription(layer, channel, group)


def subscribable(task_id: str) -> bool:
    """Whether a task id from outside makes a valid group name (a task's id always does)."""
    return _GROUP_SAFE.fullmatch(task_id) is not None


def next_beat_of(now: float, beat: float) -> float:
    """The next instant of the beat grid after `now`: every follower of the process beats together."""
    if beat <= 0:
        return now
    return (math.floor(now / beat) + 1) * beat


def _ended(until: Until, status: str, last_type: str) -> bool:
    """After the log was read to its end: is the follow over?"""
    if status not in TERMINAL_STATUSES:
        return False
    # A finished task whose log goes on after task_finished (a follow-up turn) waits for the next one.
    return until is Until.FINAL_STATUS or last_type in {"task_finished", ""}


async def follow(
    task_id: str,
    after: int,
    *,
    until: Until = Until.FINAL_STATUS,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    keepalive: float | None = None,
    subscription: Subscription | None = None,
    first_read: tuple[list[Envelope], str] | None = None,
) -> AsyncGenerator[list[Envelope] | Tick]:
    """Yield the task's events after `after` in `seq` order, each once, in batches; then live ones.

    The first item is the log's first page, possibly empty (the follower is subscribed by then).
    Later batches are never empty; a `KEEPALIVE` comes every `keepalive` seconds
    (SSE_KEEPALIVE_SECONDS by default) without a message, and the log is read again after it.
    `still_allowed` is asked at least once a keep-alive, busy or quiet; when it says no, `AccessEnded`
    is raised. It ends per `until`, every event up to the end yielded.

    `subscription` and `first_read`: a caller that subscribed (`subscribe`) and then read the log's
    first page after `after` itself (`read_after_row`, in the same call as its own checks: an event
    stream) hands both over; the follow owns the subscription from then on.
    """
    # subscribe before reading the log: nothing falls between
    sub = subscription if subscription is not None else await subscribe(task_id)
    layer, channel, group = sub.layer, sub.channel, sub.group
    last, last_type, status = after, "", ""
    beat = settings.SSE_KEEPALIVE_SECONDS if keepalive is None else keepalive
    loop = asyncio.get_running_loop()
    next_beat: float | None = None
    try:
        first = True
        while True:
            # The log decides: page through it after the last event yielded.
            while True:
                if first_read is not None:
                    (events, status), first_read = first_read, None
                else:
                    events, status = await aread(task_id, last)
                if events:
                    last, last_type = events[-1]["seq"], events[-1]["type"]
                if events or first:
                    yield events
                first = False
                if len(events) < PAGE:
                    break
            if _ended(until, status, last_type):
                return
            # Live: messages that continue the log are trusted; anything else sends us back to it.
            if next_beat is None:
                next_beat = next_beat_of(loop.time(), beat)
            while True:
                # A failed receive (the layer went away, e.g. a Redis restart) reads the log instead.
                message = await live_receive.receive(layer, channel, group, max(next_beat - loop.time(), 0))
                if loop.time() >= next_beat:
                    next_beat = next_beat_of(loop.time(), beat)
                    if still_allowed is not None and not await still_allowed():
                        raise AccessEnded
                if message is None:
                    yield KEEPALIVE
                    # A quiet beat: the task's row (read with every other follower's) says whether
                    # the log moved; only then is it read. A final status always goes to the log.
                    status, last_seq = await ROWS.get(task_id)
                    if last_seq <= last and status not in TERMINAL_STATUSES:
                        continue
                    break
                status = message.get("status", "")
                fresh = [e for e in message.get("events", []) if e["seq"] > last]
                if not fresh:  # already yielded from the log
                    if status in TERMINAL_STATUSES:
                        break
                    continue
                if fresh[0]["seq"] != last + 1:
                    break
                if until is Until.TASK_FINISHED:
                    ends = next((i for i, e in enumerate(fresh) if e["type"] == "task_finished"), None)
                    if ends is not None:
                        yield fresh[: ends + 1]
                        return
                last, last_type = fresh[-1]["seq"], fresh[-1]["type"]
                yield fresh
                if status in TERMINAL_STATUSES:
                    if until is Until.FINAL_STATUS and last_type == "task_finished":
                        # A finish's commit ends with its task_finished (actions.rows._finish), and
                        # every event up to it was yielded in order: the log would add nothing.
                        return
                    break  # a final status: the log decides whether all of it was yielded
    finally:
        await sub.close()


async def wait_until_finished(task: Task, *, timeout: float | None = None, poll: float) -> bool:
    """Wait for the task's final status: True once it has one, False when `timeout` seconds pass first.

    A follow from the caller's copy of the task (its `last_seq`, so old events are not read again):
    channel-layer messages wake it, the log is re-read every `poll` seconds.
    """
    try:
        async with asyncio.timeout(timeout) as deadline:
            async with aclosing(follow(task.id, task.last_seq, keepalive=poll)) as items:
                async for _ in items:
                    pass
    except TimeoutError:
        if deadline.expired():
            return False
        raise
    return True

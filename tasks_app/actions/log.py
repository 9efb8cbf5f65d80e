"""The log writer: events and activity entries appended inside a task API transaction, published
on the channel layer after it commits (the outbox), and the secrets masked out of both."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.db import OperationalError, connections, transaction
from django.utils import timezone

from console import crypto
from console.masking import mask
from console.prepared import Appends
from tasks_app import bus, wire
from tasks_app.models import (
    ActivityEntry,
    Task,
    TaskEvent,
)

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)


# Channel-layer messages collected while a write runs, published by the sync/async wrapper.
_OUTBOX: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("outbox", default=None)
_IN_GROUP: contextvars.ContextVar[bool] = contextvars.ContextVar("in_group_write", default=False)


def write_atomic() -> transaction.Atomic:
    """The transaction block of a runtime write (a claim, a progress batch, a finish).

    Run by the group writer, the write already has a savepoint of its own (`_apply`) in the group's
    transaction, which a failure inside this block rolls back to: a second savepoint nested in it
    was two more statements (SAVEPOINT, RELEASE) per write, a quarter of a Celery worker's database
    statements per agent run. Called anywhere else, it is the write's own transaction, or a savepoint
    in its caller's.
    """
    return transaction.atomic(savepoint=not _IN_GROUP.get())


def _queue(message: dict[str, Any]) -> None:
    outbox = _OUTBOX.get()
    if outbox is not None:
        outbox.append(message)
    else:
        bus.publish(message)


def _action(fn: Callable[P, R]) -> Callable[P, R]:
    """Make `fn` publish its events once it returned (its transaction has committed)."""

    @functools.wraps(fn)
    def sync(*args: P.args, **kwargs: P.kwargs) -> R:
        if _OUTBOX.get() is not None:  # nested inside another action: the outer one publishes
            return fn(*args, **kwargs)
        outbox: list[dict[str, Any]] = []
        token = _OUTBOX.set(outbox)
        try:
            result = fn(*args, **kwargs)
        finally:
            _OUTBOX.reset(token)
        for message in outbox:
            bus.publish(message)
        return result

    return sync


def _async_twin(fn: Callable[P, R]) -> Callable[P, Any]:
    def run(*args: P.args, **kwargs: P.kwargs) -> tuple[R, list[dict[str, Any]]]:
        outbox: list[dict[str, Any]] = []
        token = _OUTBOX.set(outbox)
        try:
            return fn(*args, **kwargs), outbox
        finally:
            _OUTBOX.reset(token)

    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        result, outbox = await sync_to_async(run)(*args, **kwargs)
        for message in outbox:
            await bus.apublish(message)
        return result

    twin.__name__ = "a" + fn.__name__
    twin.__doc__ = f"Async twin of {fn.__name__}."
    return twin


class _Write:
    """One queued runtime write: the call, where its caller waits, and what came of it."""

    __slots__ = ("args", "error", "fn", "future", "kwargs", "loop", "outbox", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None
        self.outbox: list[dict[str, Any]] = []


class GroupWriter:
    """The runtime's writes of this process, many in one transaction (group commit).

    Why: each runtime write (claim, progress, finish, release) used to be its own transaction on
    asgiref's one global sync thread, queued FIFO behind every other sync call; with many runs at
    once most of the cost was the hop and the BEGIN/COMMIT per write. Here one thread, with its own
    connection, drains the queue and runs everything waiting in ONE transaction, each write in its
    own savepoint (a failing write fails only its caller). After the commit each write's outbox is
    published, in commit order per task, and only then does its caller resume: events are written
    before they are broadcast, as with the single writes. Row locks and conditional UPDATEs are the
    functions' own, so several processes (PostgreSQL) stay correct; a write that fails on a
    transient database error (a deadlock between two processes' batches) is retried alone.
    """

    MAX_BATCH = 128  # bounds how long one batch holds SQLite's write lock against request writes

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._published: dict[asyncio.AbstractEventLoop, asyncio.Future[Any]] = {}

    async def write(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run `fn(*args, **kwargs)` in the next group transaction; its events are published first."""
        item = _Write(fn, args, kwargs)
        self._ensure_thread()
        self._queue.put(item)
        return await item.future

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue() if self._pid != os.getpid() else self._queue  # forked
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="runtime-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except BaseException as exc:  # never lose the thread: fail the batch's callers instead
                log.exception("runtime writer: a batch failed")
                for item in batch:
                    item.error, item.outbox = item.error or exc, []
            self._deliver(batch)

    def _commit(self, batch: list[_Write]) -> None:
        committed: list[bool] = []
        try:
            with transaction.atomic():
                transaction.on_commit(lambda: committed.append(True))  # runs first after the commit
                for item in batch:
                    _apply(item)
        except Exception:
            if committed:  # a write's on_commit callback raised after the commit: the writes stand
                log.exception("runtime writer: an on_commit callback failed")
                return
            # The commit itself failed (or the connection broke): nothing was stored.
            connections["default"].close()
            for item in batch:
                _apply_alone(item)
            return
        for item in batch:  # a transient error inside the group (a deadlock with another process)
            if isinstance(item.error, OperationalError):
                _apply_alone(item)

    def _deliver(self, batch: list[_Write]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Write]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone; nobody waits
                loop.call_soon_threadsafe(self._publish_on_loop, loop, items)

    def _publish_on_loop(self, loop: asyncio.AbstractEventLoop, items: list[_Write]) -> None:
        previous = self._published.get(loop)
        done = loop.create_task(_publish(items, previous))
        self._published[loop] = done
        done.add_done_callback(
            lambda t: self._published.pop(loop, None) if self._published.get(loop) is t else None
        )


def _apply(item: _Write) -> None:
    """Run one write of a group in a savepoint of its own: a failing write fails only its caller."""
    token, grouped = _OUTBOX.set(item.outbox), _IN_GROUP.set(True)
    try:
        with transaction.atomic():
            item.result, item.error = item.fn(*item.args, **item.kwargs), None
    except Exception as exc:
        item.result, item.error, item.outbox[:] = None, exc, []
    finally:
        _IN_GROUP.reset(grouped)
        _OUTBOX.reset(token)


def _apply_alone(item: _Write) -> None:
    """Run one write in a transaction of its own (the retry of a write the group could not keep)."""
    item.outbox[:] = []
    try:
        with transaction.atomic():
            _apply(item)
    except Exception as exc:
        item.result, item.error, item.outbox[:] = None, exc, []
        connections["default"].close()


async def _publish(items: list[_Write], previous: asyncio.Future[Any] | None) -> None:
    """Publish a batch's events (after the previous batch's: order per task), then wake the callers."""
    if previous is not None:
        await asyncio.wait({previous})
    by_task: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        for message in item.outbox:
            by_task.setdefault(message["task_id"], []).append(message)
    if by_task:
        await asyncio.gather(*(_publish_in_order(messages) for messages in by_task.values()))
    for item in items:
        if item.future.done():
            continue
        if item.error is not None:
            item.future.set_exception(item.error)
        else:
            item.future.set_result(item.result)


async def _publish_in_order(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        await bus.apublish(message)


_writer = GroupWriter()


def _outer_sync_thread() -> bool:
    """True under async_to_sync or inside a request: thread-sensitive code must stay on that thread.

    Tests and management code drive runs through async_to_sync, holding a transaction on their
    own thread; a write on another connection would wait for it, so they keep the old path.
    """
    return (
        getattr(AsyncToSync.executors, "current", None) is not None
        or SyncToAsync.thread_sensitive_context.get(None) is not None
    )


def _runtime_twin(fn: Callable[P, R]) -> Callable[P, Any]:
    """Async twin of a runtime write, run by the process's group writer (see GroupWriter)."""
    old = _async_twin(fn)

    async def twin(*args: P.args, **kwargs: P.kwargs) -> R:
        if _outer_sync_thread():
            return await old(*args, **kwargs)
        return await _writer.write(fn, *args, **kwargs)

    twin.__name__ = "a" + fn.__name__
    twin.__doc__ = f"Async twin of {fn.__name__}, in the next group commit of the runtime's writes."
    return twin


def _append_events(
    task: Task, events: Iterable[tuple[str, Any]], secrets: Iterable[str] | None = None
) -> list[TaskEvent]:
    """Append events with the next gap-free seqs; the caller holds the task row lock.

    `secrets`: every string to mask, the task's user tokens included; None reads them from the task.
    """
    rows = _store_events(task, events, secrets)
    if rows:
        Task.objects.filter(pk=task.id).update(last_seq=task.last_seq)
    return rows


def _store_events(
    task: Task, events: Iterable[tuple[str, Any]], secrets: Iterable[str] | None = None
) -> list[TaskEvent]:
    """_append_events without storing the task's `last_seq`: the caller saves it with its own UPDATE.

    The rows come back without their database id (console.prepared.Appends): an event is known by
    its task and seq.

    Why: a write that changes the task row anyway (a finish, a progress batch with activity) saves
    the counters in that one UPDATE instead of one more per kind of row appended.
    """
    events = list(events)
    if not events:
        return []
    secrets = _task_secrets(task) if secrets is None else list(secrets)
    now = timezone.now()
    start = task.last_seq
    rows = [
        TaskEvent(task_id=task.id, seq=start + i + 1, type=type_, time=now, data=mask(data, secrets))
        for i, (type_, data) in enumerate(events)
    ]
    _EVENTS.insert(rows)
    task.last_seq = start + len(rows)
    _queue(bus.make_message(task.id, task.status, [wire.envelope(r) for r in rows]))
    if any(r.type in SNAPSHOT_EVENTS for r in rows):  # the live list: only changes of the task itself
        _queue(bus.make_org_message(task.organization_id, wire.task_change_json(task)))
    return rows


def _store_activity(
    task: Task, entries: Iterable[tuple[str, dict[str, Any]]], secrets: Iterable[str] | None = None
) -> list[ActivityEntry]:
    """Append activity entries in one INSERT; like _store_events, the caller saves `last_activity`."""
    entries = list(entries)
    if not entries:
        return []
    secrets = _task_secrets(task) if secrets is None else list(secrets)
    start = task.last_activity
    rows = [
        ActivityEntry(
            task_id=task.id, position=start + i + 1, kind=kind, turn=task.turns, data=mask(data, secrets)
        )
        for i, (kind, data) in enumerate(entries)
    ]
    _ACTIVITY.insert(rows)
    task.last_activity = start + len(rows)
    return rows


SNAPSHOT_EVENTS = frozenset({"task_created", "task_updated", "task_finished"})
# Every write of a run appends to both logs: their INSERTs are built once per size (console.prepared).
_EVENTS, _ACTIVITY = Appends(TaskEvent), Appends(ActivityEntry)


def _append_activity(
    task: Task, kind: str, data: dict[str, Any], secrets: Iterable[str] | None = None
) -> ActivityEntry:
    secrets = _task_secrets(task) if secrets is None else secrets  # as _append_events
    task.last_activity += 1
    Task.objects.filter(pk=task.id).update(last_activity=task.last_activity)
    return ActivityEntry.objects.create(
        task_id=task.id, position=task.last_activity, kind=kind, turn=task.turns, data=mask(data, secrets)
    )


def _task_secrets(task: Task) -> list[str]:
    """Strings that must never be written to the logs of this task."""
    found: list[str] = []
    for value in (task_user_tokens(task) or {}).values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            found.extend(v for v in value.values() if isinstance(v, str))
    return found


def task_user_tokens(task: Task) -> dict[str, Any]:
    """The decrypted per-user MCP tokens sent with the task; only the runtime should call this."""
    if not task.user_tokens_encrypted:
        return {}
    return crypto.decrypt_json(task.user_tokens_encrypted)

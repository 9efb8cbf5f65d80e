"""The log writer: events and activity entries appended inside a task API transaction, published
on the channel layer after it commits (the outbox), and the secrets masked out of both."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.utils import timezone

from console import crypto
from console.masking import mask
from tasks_app import bus, wire
from tasks_app.models import (
    ActivityEntry,
    Task,
    TaskEvent,
)

P = ParamSpec("P")
R = TypeVar("R")


# Channel-layer messages collected while a write runs, published by the sync/async wrapper.
_OUTBOX: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("outbox", default=None)


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


def _append_events(
    task: Task, events: Iterable[tuple[str, Any]], secrets: Iterable[str] | None = None
) -> list[TaskEvent]:
    """Append events with the next gap-free seqs; the caller holds the task row lock.

    `secrets`: every string to mask, the task's user tokens included; None reads them from the task.
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
    TaskEvent.objects.bulk_create(rows)
    task.last_seq = start + len(rows)
    Task.objects.filter(pk=task.id).update(last_seq=task.last_seq)
    _queue(bus.make_message(task.id, task.status, [wire.envelope(r) for r in rows]))
    if any(r.type in SNAPSHOT_EVENTS for r in rows):  # the live list: only changes of the task itself
        _queue(bus.make_org_message(task.organization_id, wire.task_change_json(task)))
    return rows


SNAPSHOT_EVENTS = frozenset({"task_created", "task_updated", "task_finished"})


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

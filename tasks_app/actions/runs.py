"""The runtime's side of a task: claim, lease, progress, finish, release and the reaper's requeue."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from console.models import Framework
from console.prepared import KeyedRead
from tasks_app import dispatch
from tasks_app.actions.log import (
    _action,
    _append_events,
    _runtime_twin,
    _store_activity,
    _store_events,
    _task_secrets,
    write_atomic,
)
from tasks_app.actions.reads import task_agent
from tasks_app.actions.rows import (
    TASK_ROW,
    _claim_columns,
    _finish,
    _save,
    _snapshot,
    _task_for_update,
    _task_row_for_update,
)
from tasks_app.models import (
    TERMINAL_STATUSES,
    ActivityKind,
    Status,
    Task,
    TaskEvent,
)


@_action
def claim_task(task_id: str, worker_id: str, lease_seconds: float) -> Task | None:
    """Claim a pending task; None when it is not there to claim (claimed, stopped or finished).

    The claimed task comes back with its agent loaded, as the run needs them (runner.run_turn).
    The claimable row is read locked and written back, each statement compiled once per thread
    (console.prepared): built through the ORM per claim (a conditional UPDATE, then a read joined
    with the agent), the claim cost a Celery worker ~6 % more CPU per run. The read carries the
    claim's condition, as the UPDATE did: a task that is no longer pending is skipped without
    taking or waiting for its lock (its run's writes may hold it; two processes' group commits each
    claiming the other's running task would deadlock), and a second claimer of a pending task waits
    for the first to commit, then finds the row no longer matches (SQLite: a writer's transaction
    holds the write lock from its start).
    """
    with write_atomic():
        try:
            task = _CLAIMABLE.get(task_id)
        except Task.DoesNotExist:
            return None
        claim = {**_claim_columns(worker_id, lease_seconds), "attempts": task.attempts + 1}
        for column, value in claim.items():
            setattr(task, column, value)
        task.agent = task_agent(task)  # the run starts from this object and reads neither row again
        if task.turns == 1 and task.attempts == 1:  # its first run is only starting: no sub-task yet
            task.mark_no_sub_tasks()
        _store_events(task, [("task_updated", _snapshot(task))])
        task.forget_no_sub_tasks()  # the run goes on with this object and may delegate
        TASK_ROW.set(task.id, {**claim, "last_seq": task.last_seq})
    return task


_CLAIMABLE = KeyedRead(
    Task,
    lambda task_id: Task.objects.select_for_update(of=("self",)).filter(
        pk=task_id, status=Status.PENDING, stop_requested_at__isnull=True
    ),
)


aclaim_task = _runtime_twin(claim_task.__wrapped__)


def renew_lease(task_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the task was stopped, finished or taken over (stop running)."""
    expires = timezone.now() + timezone.timedelta(seconds=lease_seconds)
    return bool(
        Task.objects.filter(
            pk=task_id, lease_owner=worker_id, status=Status.EXECUTING, stop_requested_at__isnull=True
        ).update(lease_expires_at=expires)
    )


def renew_leases(worker_id: str, lease_seconds: float, task_ids: Iterable[str]) -> list[str]:
    """Extend every lease `worker_id` holds in one statement; return the `task_ids` it no longer holds.

    A pool renews all its runs at once (one UPDATE per period, not one per task); the runs it lost
    (stopped, finished, or taken over after its lease lapsed) are the ones to cancel. The fencing is
    renew_lease's: only executing tasks with this owner and no stop request are extended.
    """
    expires = timezone.now() + timezone.timedelta(seconds=lease_seconds)
    held = Task.objects.filter(lease_owner=worker_id, status=Status.EXECUTING, stop_requested_at__isnull=True)
    with transaction.atomic():
        # Rows our own writer holds right now are skipped, not waited for: one multi-row UPDATE
        # waiting on a group transaction that locks the same rows in another order deadlocks on
        # PostgreSQL, and a renewal lost that way lets the leases lapse. A skipped row is renewed next
        # beat (the lease outlasts several). SQLite has no row locks: the clause is ignored there.
        free = list(held.select_for_update(skip_locked=True).values_list("pk", flat=True))
        if free:
            held.filter(pk__in=free).update(lease_expires_at=expires)
    task_ids = list(task_ids)
    if not task_ids:
        return []
    still = set(held.filter(pk__in=task_ids).values_list("id", flat=True))
    return [task_id for task_id in task_ids if task_id not in still]


@_action
def record_progress(
    task_id: str,
    *,
    events: Iterable[tuple[str, Any]] = (),
    activity: Iterable[tuple[str, dict[str, Any]]] = (),
    secrets: Iterable[str] | None = None,
    worker_id: str | None = None,
) -> list[TaskEvent]:
    """Append a batch of events and activity entries in one transaction (the runtime's hot path).

    With `worker_id`, the batch is dropped unless that worker still holds the running task: a run
    that lost its task (stopped, finished or reaped elsewhere) must not write after the fact.
    `secrets` are all the strings to mask, the task's user tokens included (a run resolves them
    once); without them the task's are read for the batch.
    """
    with write_atomic():
        task = _task_row_for_update(task_id, *PROGRESS_COLUMNS)
        if worker_id is not None and (task.status != Status.EXECUTING or task.lease_owner != worker_id):
            return []
        secrets = _task_secrets(task) if secrets is None else list(secrets)
        entries = _store_activity(task, activity, secrets)
        rows = _store_events(task, events, secrets)
        counters = {"last_seq": task.last_seq} if rows else {}
        if entries:
            counters["last_activity"] = task.last_activity
        if counters:  # one UPDATE for both counters
            TASK_ROW.set(task.id, counters)
        return rows


# What a progress batch reads of its task (the rest is never touched on the hot path).
PROGRESS_COLUMNS = (
    "id",
    "organization",
    "agent",
    "status",
    "lease_owner",
    "last_seq",
    "last_activity",
    "turns",
    "user_tokens_encrypted",
)


arecord_progress = _runtime_twin(record_progress.__wrapped__)


@_action
def finish_task(
    task_id: str,
    status: str,
    result: str | None,
    *,
    worker_id: str | None = None,
    tokens: dict[str, int] | None = None,
    used_tools: list[str] | None = None,
    final_message: str | None = None,
    events: Iterable[tuple[str, Any]] = (),
    activity: Iterable[tuple[str, dict[str, Any]]] = (),
    secrets: Iterable[str] | None = None,
    no_sub_tasks: bool = False,
) -> Task | None:
    """Finish a running task unless it already finished (a stop may have won the race).

    `events` and `activity`: the run's last progress (as record_progress takes it, masked with
    `secrets`), stored before the final events in the same transaction; dropped with the rest when
    the run no longer holds the task.
    `no_sub_tasks`: the caller knows the task has none (the runtime: the first attempt of a first
    turn whose graph offered no sub-agent), so the final snapshots need no query for them.
    """
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status} is not a final status")
    with write_atomic():
        task = _task_row_for_update(task_id)
        if task.is_finished or (worker_id is not None and task.lease_owner != worker_id):
            return None
        if no_sub_tasks:
            task.mark_no_sub_tasks()
        also: list[str] = []  # saved in _finish's one UPDATE
        events, activity = list(events), list(activity)
        if events or activity:
            secrets = _task_secrets(task) if secrets is None else list(secrets)
            if _store_activity(task, activity, secrets):
                also.append("last_activity")
        if tokens:
            task.tokens = _add_tokens(task.tokens, tokens)
            also.append("tokens")
        if used_tools:
            task.used_tools = [*(task.used_tools or []), *used_tools]
            also.append("used_tools")
        if final_message is not None:
            _store_activity(
                task, [(ActivityKind.MESSAGE, {"role": "agent", "content": {"text": final_message}})]
            )
            also.append("last_activity")
        # The run's last events go in the final events' INSERT (last_seq is saved by _finish).
        _finish(task, status, result, also=tuple(dict.fromkeys(also)), last_events=events, secrets=secrets)
    return task


afinish_task = _runtime_twin(finish_task.__wrapped__)


def _add_tokens(current: dict | None, new: dict[str, int]) -> dict[str, int]:
    out = dict(current or {})
    for key, value in new.items():
        out[key] = int(out.get(key, 0) or 0) + int(value or 0)
    return out


@_action
def release_task(task_id: str, worker_id: str) -> bool:
    """A worker shutting down hands its running task back to the queue (or stops it, if asked to)."""
    with transaction.atomic():
        task = _task_for_update(task_id)
        if task.status != Status.EXECUTING or task.lease_owner != worker_id:
            return False
        if task.stop_requested_at:
            _finish(task, Status.STOPPED, task.result or "Stopped by request", manually=True)
            return True
        task.status = Status.PENDING
        task.lease_owner = ""
        task.lease_expires_at = None
        _save(task, "status", "lease_owner", "lease_expires_at")
        _append_events(task, [("task_updated", _snapshot(task))])
    transaction.on_commit(functools.partial(dispatch.dispatch, task_id))
    return True


arelease_task = _runtime_twin(release_task.__wrapped__)


@_action
def requeue_expired(max_attempts: int) -> list[str]:
    """Reaper: give tasks whose lease expired back to the queue, or fail them after max_attempts."""
    now = timezone.now()
    requeued: list[str] = []
    expired = list(  # external agents' deliveries have their own reaper (actions.workers)
        Task.objects.filter(
            status=Status.EXECUTING, lease_expires_at__lt=now, agent__framework=Framework.BUILTIN
        ).values_list("id", flat=True)
    )
    for task_id in expired:
        with transaction.atomic():
            task = _task_for_update(task_id)
            if task.status != Status.EXECUTING or not task.lease_expires_at or task.lease_expires_at >= now:
                continue
            if task.stop_requested_at:
                _finish(task, Status.STOPPED, task.result or "Stopped by request", manually=True)
            elif task.attempts >= max_attempts:
                _finish(
                    task,
                    Status.FAILED,
                    f"The worker running this task stopped responding {task.attempts} times; giving up.",
                )
            else:
                task.status = Status.PENDING
                task.lease_owner = ""
                task.lease_expires_at = None
                _save(task, "status", "lease_owner", "lease_expires_at")
                _append_events(task, [("task_updated", _snapshot(task))])
                requeued.append(task.id)
    return requeued


arequeue_expired = _runtime_twin(requeue_expired.__wrapped__)

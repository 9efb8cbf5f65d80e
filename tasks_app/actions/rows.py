"""Row helpers every write shares: locking a task, saving it, its snapshot, finishing it."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from console.access import Actor
from console.errors import Forbidden, NotFound
from console.masking import mask
from console.models import Role
from console.prepared import KeyedRead, RowUpdates
from tasks_app import wire
from tasks_app.actions.log import _store_events, _task_secrets
from tasks_app.models import (
    Status,
    Task,
)


def _locked_task(actor: Actor, task_id: str) -> Task:
    """The caller's organization's task, its row locked for this transaction (one query).

    The task's row alone, its SQL compiled once per thread: every push, update and stop of an
    external worker starts here, and building this query through the ORM (with a join to its agent)
    was a fifth of a push's CPU. The few callers that need the agent load it through `task.agent`:
    a stop of a running task, and an update to a status that is not final (`status_for_update`).
    """
    try:
        return _LOCKED_TASK.get(task_id, actor.organization_id)
    except (Task.DoesNotExist, ValueError):
        raise NotFound(f"Task {task_id} not found") from None


_LOCKED_TASK = KeyedRead(
    Task,
    lambda task_id, organization_id: Task.objects.select_for_update(of=("self",)).filter(
        pk=task_id, organization_id=organization_id
    ),
    2,
)


def _task_for_update(task_id: str) -> Task:
    return Task.objects.select_for_update(of=("self",)).select_related("agent").get(pk=task_id)


def _task_row_for_update(task_id: str, *columns: str) -> Task:
    """The task's row alone, locked (no join with its agent); only `columns` when given.

    The runtime's writes never read the agent, and a progress batch reads a handful of columns:
    loading every column of both rows per batch was most of a small write's cost. Each shape's SQL
    is compiled once per thread (console.prepared), not per write.
    """
    return _task_row_read(columns).get(task_id)


@functools.cache  # by columns: the callers use two shapes
def _task_row_read(columns: tuple[str, ...]) -> KeyedRead[Task]:
    def build(task_id: str) -> QuerySet[Task]:
        rows = Task.objects.select_for_update(of=("self",))
        return (rows.only(*columns) if columns else rows).filter(pk=task_id)

    return KeyedRead(Task, build)


# The task row's hot UPDATEs (a claim, a batch's counters, a finish), built once per set of columns.
TASK_ROW = RowUpdates(Task)


def _claim_columns(worker_id: str, lease_seconds: float) -> dict[str, Any]:
    """What a claim sets on a task's row: executing under `worker_id`'s lease, started now.

    One definition for the pool's claim (runs.claim_task) and a create's own (create._claim_new).
    """
    now = timezone.now()
    return {
        "status": Status.EXECUTING,
        "lease_owner": worker_id,
        "lease_expires_at": now + timezone.timedelta(seconds=lease_seconds),
        "started_at": now,
        "updated_at": now,
    }


def _save(task: Task, *fields: str) -> None:
    task.updated_at = timezone.now()
    task.save(update_fields=[*fields, "updated_at"])


def _snapshot(task: Task) -> dict[str, Any]:
    snapshot = wire.task_json(task)
    task.__dict__["_snapshot_sub_executions"] = snapshot["sub_executions"]
    return snapshot


def answer_json(task: Task) -> dict[str, Any]:
    """The Task JSON a request's write answers with, right after the write returned.

    The sub-tasks its last snapshot read are reused: only a run makes sub-tasks, never a request's
    write, so they cannot have changed since (an update's finish read them; this saves the second
    query, a tenth of an update's CPU). They are taken, not kept: a later call on the same object
    reads them again.
    """
    return wire.task_json(task, sub_executions=task.__dict__.pop("_snapshot_sub_executions", None))


def _finish(
    task: Task,
    status: str,
    result: str | None,
    *,
    manually: bool = False,
    duration: float | None = None,
    also: tuple[str, ...] = (),
    last_events: Iterable[tuple[str, Any]] = (),
    secrets: Iterable[str] | None = None,
) -> None:
    """Give the task its final status and append task_updated + task_finished, in ONE row UPDATE.

    `also`: other columns the caller changed on `task` (tokens, last_activity...), saved with it.
    `last_events`: events to store first, in the same INSERT (a run's last output), masked with
    `secrets` (the task's own are read when None).

    The rule live followers rely on (events.follow ends on a live task_finished): nothing is appended
    to the task's log after this in the same transaction; every caller returns right after it.
    """
    now = timezone.now()
    task.status = status
    if result is not None:
        task.result = mask(result, _task_secrets(task))  # the result is echoed to every reader
    task.finished_at = now
    task.lease_owner = ""
    task.lease_expires_at = None
    # Only a stop ends as manually stopped: a run that won the race against a stop is just completed.
    task.is_manually_stopped = status == Status.STOPPED and (manually or task.stop_requested_at is not None)
    turn_started = task.started_at or (task.created_at if task.turns == 1 else now)
    before = float((task.metrics or {}).get("duration_before_turn", 0.0))
    task.duration = round(before + (now - turn_started).total_seconds(), 3) if duration is None else duration
    task.updated_at = now
    snapshot = _snapshot(task)
    _store_events(task, [*last_events, ("task_updated", snapshot), ("task_finished", snapshot)], secrets)
    TASK_ROW.save(
        task,
        [
            "status",
            "result",
            "finished_at",
            "lease_owner",
            "lease_expires_at",
            "is_manually_stopped",
            "duration",
            "updated_at",
            "last_seq",
            *also,
        ],
    )


def _require_writer(actor: Actor) -> None:
    if not actor.can(Role.MEMBER):
        raise Forbidden("Your role (viewer) may read tasks but not create or change them")

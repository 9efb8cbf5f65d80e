"""Changes from users: stop (and the forced stop), update, internal status."""

from __future__ import annotations

import contextlib

from django.db import transaction
from django.utils import timezone

from console import audit
from console.access import SYSTEM, Actor
from console.errors import Conflict, Invalid
from console.masking import mask
from console.models import Framework
from tasks_app import dispatch
from tasks_app.actions.log import _action, _append_activity, _append_events, _async_twin, _task_secrets
from tasks_app.actions.rows import _finish, _locked_task, _require_writer, _save, _snapshot, _task_for_update
from tasks_app.models import (
    INTERNAL_STATUS_MAX,
    TERMINAL_STATUSES,
    ActivityKind,
    InternalStatusChange,
    Status,
    Task,
)
from tasks_app.schemas import TaskUpdateIn


@_action
def stop_task(actor: Actor, task_id: str) -> Task:
    """Request a stop. A task nobody is running stops at once; a running one is cancelled by its worker."""
    if actor.role != SYSTEM:
        _require_writer(actor)
    with transaction.atomic():
        task = _locked_task(actor, task_id)
        if task.is_finished:
            raise Conflict(f"Task {task.id} is already {task.status}", status=task.status)
        running_here = (
            task.status == Status.EXECUTING and task.lease_owner and task.agent.framework == Framework.BUILTIN
        )
        if running_here:
            # The cancel goes out now, not after the commit: the model's connection closes while this
            # transaction finishes. The run records the stop itself (finish_task waits for this row),
            # so a cancel that outruns the commit still ends as "stopped", never lost.
            dispatch.request_cancel(task.id)
        task.stop_requested_at = timezone.now()
        _save(task, "stop_requested_at")
        if not running_here:
            _finish(task, Status.STOPPED, task.result or "Stopped by request", manually=True)
        audit.record_task(actor, task, "task.stopped")
        children = list(
            Task.objects.filter(parent_id=task.id)
            .exclude(status__in=TERMINAL_STATUSES)
            .values_list("id", flat=True)
        )
    for child in children:
        with contextlib.suppress(Conflict):
            stop_task(Actor(task.organization_id, SYSTEM), child)
    return task


astop_task = _async_twin(stop_task.__wrapped__)


@_action
def force_stop(task_id: str, reason: str) -> Task | None:
    """Finish a stop its worker did not complete in time (the worker's later finish then loses)."""
    with transaction.atomic():
        task = _task_for_update(task_id)
        if task.is_finished:
            return None
        _finish(task, Status.STOPPED, task.result or reason, manually=True)
    return task


aforce_stop = _async_twin(force_stop.__wrapped__)


@_action
def update_task(actor: Actor, task_id: str, data: TaskUpdateIn, *, fields: set[str], full_dump: bool) -> Task:
    """Apply PATCH .../update: a sparse update, or the SDK's full dump from save()/set_status()."""
    _require_writer(actor)
    with transaction.atomic():
        task = _locked_task(actor, task_id)
        before = audit.task_fields(task)
        changed: list[str] = []
        if "internal_status" in fields:
            changed += _set_internal_status(task, data.internal_status, actor)
        new_status = task.status_for_update(data.status if "status" in fields else None, full_dump=full_dump)
        writable = not task.is_finished or not full_dump
        if writable:
            for name in ("source", "last_executed_node_id", "title"):
                if (
                    name in fields
                    and getattr(data, name) is not None
                    and getattr(data, name) != getattr(task, name)
                ):
                    setattr(task, name, getattr(data, name))
                    changed.append(name)
            if "result" in fields and data.result is not None and data.result != task.result:
                task.result = mask(data.result, _task_secrets(task))
                changed.append("result")
        if changed:
            _save(task, *changed)
        if new_status == Status.STOPPED:
            # A stop through update is a stop: it cancels the run and its sub-agent tasks.
            if changed:
                _append_events(task, [("task_updated", _snapshot(task))])
                audit.record_task(actor, task, "task.updated", before)
            return stop_task(actor, task.id)
        if new_status in TERMINAL_STATUSES:
            if new_status == Status.COMPLETED and task.result:
                # An external worker's answer belongs in the thread, as the runtime's final message does.
                _append_activity(
                    task, ActivityKind.MESSAGE, {"role": "agent", "content": {"text": task.result}}
                )
            _finish(task, new_status, None, manually=new_status == Status.STOPPED)
        elif new_status:
            task.status = new_status
            fields_to_save = ["status"]
            if new_status == Status.EXECUTING and task.started_at is None:
                task.started_at = timezone.now()
                fields_to_save.append("started_at")
            _save(task, *fields_to_save)
            _append_events(task, [("task_updated", _snapshot(task))])
        elif changed:
            _append_events(task, [("task_updated", _snapshot(task))])
        audit.record_task(actor, task, "task.updated", before)
    return task


def _set_internal_status(task: Task, value: str | None, actor: Actor) -> list[str]:
    if value is not None and len(value) > INTERNAL_STATUS_MAX:
        raise Invalid("internal_status", f"at most {INTERNAL_STATUS_MAX} characters (got {len(value)})")
    value = value or None
    if value == task.internal_status:
        return []
    InternalStatusChange.objects.create(
        task_id=task.id,
        changed_by_user_id=actor.user_id,
        changed_by_key_id=actor.api_key_id,
        changed_by_label=actor.label,
        from_value=task.internal_status,
        to_value=value,
    )
    task.internal_status = value
    return ["internal_status"]

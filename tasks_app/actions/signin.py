"""Task API for tasks that wait for their user to sign in to an MCP server (issue 15).

A running built-in task whose user has no usable token for a server that supports sign-in is
paused before its first model request (`pause_for_signin`), with a `login_required` auth event
carrying the sign-in link. A sign-in resumes every task of that person waiting for that server
(`resume_signed_in`): the task goes back to `pending` and a worker re-claims it, starting the turn
from its beginning. Nobody signing in within SIGNIN_WAIT_SECONDS fails it (`fail_expired_waits`).
Each is one transaction, events appended with the log writer and published after commit.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from console.vault import Owner
from tasks_app import dispatch
from tasks_app.actions import (
    _action,
    _append_activity,
    _append_events,
    _async_twin,
    _finish,
    _save,
    _snapshot,
    _task_for_update,
)
from tasks_app.models import ActivityKind, Status, Task
from tasks_app.signin_models import SignInWait


@_action
def pause_for_signin(
    task_id: str, worker_id: str, owner: Owner, graph_item_key: str, event: dict[str, Any]
) -> bool:
    """Pause the worker's running task until `owner` signs in to the graph item; False if it lost it.

    `event` is the auth event's `{"type": "login_required", "data": {...}}`, written to the stream
    and the activity log. A stop requested meanwhile wins: the task stops instead.
    """
    with transaction.atomic():
        task = _task_for_update(task_id)
        if task.status != Status.EXECUTING or task.lease_owner != worker_id:
            return False
        if task.stop_requested_at:
            _finish(task, Status.STOPPED, task.result or "Stopped by request", manually=True)
            return False
        data = event.get("data") or {}
        SignInWait.objects.update_or_create(
            task=task,
            defaults={
                "organization_id": task.organization_id,
                "member_id": owner.member_id,
                "external_user_id": "" if owner.is_member else owner.external_id,
                "graph_item_key": graph_item_key,
                "server_name": str(data.get("server_name", ""))[:200],
                "signin_url": str(data.get("url", ""))[:1000],
                "since": timezone.now(),
                "deadline": timezone.now() + timedelta(seconds=settings.SIGNIN_WAIT_SECONDS),
            },
        )
        task.status = Status.PAUSED
        task.lease_owner = ""
        task.lease_expires_at = None
        _save(task, "status", "lease_owner", "lease_expires_at")
        _append_activity(task, ActivityKind.AUTH, event)
        _append_events(task, [("auth_event", event), ("task_updated", _snapshot(task))])
    return True


def waiting(organization_id: str, owner: Owner, graph_item_key: str | None = None) -> list[SignInWait]:
    """The owner's paused tasks waiting for a sign-in (to one server, or any)."""
    qs = SignInWait.objects.filter(organization_id=organization_id, task__status=Status.PAUSED)
    if owner.is_member:
        qs = qs.filter(member_id=owner.member_id)
    else:
        qs = qs.filter(member__isnull=True, external_user_id=owner.external_id)
    if graph_item_key is not None:
        qs = qs.filter(graph_item_key=graph_item_key)
    return list(qs.select_related("task").order_by("since"))


@_action
def resume_signed_in(
    organization_id: str, owner: Owner, graph_item_key: str, server_name: str = ""
) -> list[str]:
    """Requeue the owner's tasks waiting for this server; a `token_ready` event says so (no token in it)."""
    resumed: list[str] = []
    for wait in waiting(organization_id, owner, graph_item_key):
        with transaction.atomic():
            task = _task_for_update(wait.task_id)
            if task.status != Status.PAUSED:
                continue
            event = {"type": "token_ready", "data": {"server_name": server_name or wait.server_name}}
            task.status = Status.PENDING
            _save(task, "status")
            SignInWait.objects.filter(pk=wait.pk).delete()
            _append_activity(task, ActivityKind.AUTH, event)
            _append_events(task, [("auth_event", event), ("task_updated", _snapshot(task))])
            transaction.on_commit(functools.partial(dispatch.dispatch, task.id))
        resumed.append(task.id)
    return resumed


@_action
def fail_expired_waits() -> list[str]:
    """Fail paused tasks whose user did not sign in before their deadline."""
    failed: list[str] = []
    due = SignInWait.objects.filter(deadline__lt=timezone.now(), task__status=Status.PAUSED)
    for wait in list(due):
        with transaction.atomic():
            task: Task = _task_for_update(wait.task_id)
            if task.status != Status.PAUSED:
                continue
            name = wait.server_name or wait.graph_item_key
            _finish(
                task,
                Status.FAILED,
                f"Nobody signed in to {name} within {settings.SIGNIN_WAIT_SECONDS} seconds; the task gave up.",
            )
            SignInWait.objects.filter(pk=wait.pk).delete()
        failed.append(task.id)
    return failed


apause_for_signin = _async_twin(pause_for_signin.__wrapped__)
afail_expired_waits = _async_twin(fail_expired_waits.__wrapped__)

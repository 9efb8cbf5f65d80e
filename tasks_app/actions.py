"""The task API: the one module that changes tasks.

REST routes, console views, the websocket consumer and the runtime all call these functions;
nothing else writes Task, TaskEvent or ActivityEntry rows. Each write runs in one transaction,
and the events it appended are published on the channel layer only after that commit.

Every public write has a sync form and an async twin (prefixed `a`), which publish differently:
the async one awaits the channel layer on the caller's loop, the sync one hops through
async_to_sync.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from console import crypto, vault
from console.models import Agent, Framework, Role
from tasks_app import bus, dispatch, wire
from tasks_app.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from tasks_app.masking import mask
from tasks_app.models import (
    INTERNAL_STATUS_MAX,
    TERMINAL_STATUSES,
    ActivityEntry,
    ActivityKind,
    InternalStatusChange,
    Status,
    Task,
    TaskEvent,
)
from tasks_app.schemas import MetricsReportIn, TaskCreateIn, TaskReportIn, TaskUpdateIn, UserIn

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Actor:
    """Who is calling: an API key or a signed-in member, always inside one organization."""

    organization_id: str
    role: str
    user_id: int | None = None
    api_key_id: int | None = None
    label: str = ""
    user_email: str = ""
    member_id: int | None = None  # the Membership acting (None for the runtime)
    vault_id: str = ""  # that member's vault identity

    @property
    def is_service_key(self) -> bool:
        """An admin's or owner's API key: the only caller that may name end users in input.user."""
        return self.api_key_id is not None and self.role in (Role.ADMIN, Role.OWNER)

    @property
    def as_member(self) -> vault.Owner:
        return vault.Owner(member_id=self.member_id) if self.member_id is not None else vault.NOBODY

    def may_use(self, owner: vault.Owner) -> bool:
        """Whether this caller may read `owner`'s vault tokens: a service key any, a member only its own."""
        if self.role == SYSTEM or self.is_service_key:
            return bool(owner)
        return owner.is_member and owner.member_id == self.member_id

    def can(self, role: str) -> bool:
        from console.models import ROLE_RANK

        if self.role == SYSTEM:
            return True
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


SYSTEM = "system"  # the runtime acts on tasks it already holds; it is not an organization member

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


# --------------------------------------------------------------------------------------------
# Reads (scoped to the actor's organization: another organization's rows are a 404)


def get_agent(actor: Actor, agent_id: str) -> Agent:
    try:
        return Agent.objects.get(pk=agent_id, organization_id=actor.organization_id)
    except (Agent.DoesNotExist, ValueError):
        raise NotFound(f"Agent {agent_id} not found") from None


def get_task(actor: Actor, task_id: str) -> Task:
    try:
        return Task.objects.select_related("agent").get(pk=task_id, organization_id=actor.organization_id)
    except (Task.DoesNotExist, ValueError):
        raise NotFound(f"Task {task_id} not found") from None


LIST_FILTERS = {"user_id", "parent_task_id", "triggering_agent_id", "status", "internal_status"}
# What a TasksListItem shows (wire.task_list_item_json): a listing never loads prompts, logs or metrics.
LIST_COLUMNS = (
    "id",
    "agent_id",
    "organization_id",
    "status",
    "internal_status",
    "user_id",
    "parent_id",
    "triggering_agent_id",
    "created_at",
    "updated_at",
    "result",
    "title",
    "source",
)


def list_tasks(
    actor: Actor, *, agent_id: str | None = None, filters: dict[str, str] | None = None, limit: int = 100
) -> list[Task]:
    """Tasks of the organization, newest first, with the SDK's documented filters."""
    qs = Task.objects.filter(organization_id=actor.organization_id)
    if agent_id is not None:
        get_agent(actor, agent_id)
        qs = qs.filter(agent_id=agent_id)
    for key, value in (filters or {}).items():
        if value in (None, ""):
            continue
        if key == "status":
            statuses = [s.strip().removeprefix("AgentExecutionStatus.").lower() for s in value.split(",")]
            bad = [s for s in statuses if s not in Status.values]
            if bad:
                raise Invalid("status", f"unknown status {bad[0]!r}; one of {', '.join(Status.values)}")
            qs = qs.filter(status__in=statuses)
        elif key == "parent_task_id":
            qs = qs.filter(parent_id=value)
        elif key in {"user_id", "triggering_agent_id", "internal_status"}:
            qs = qs.filter(**{key: value})
    return list(qs.only(*LIST_COLUMNS).order_by("-created_at")[: max(1, min(limit, 1000))])


def activity_entries(task: Task, *, after: int = 0, limit: int | None = None) -> list[ActivityEntry]:
    """The task's activity log in order: all of it, or `limit` entries after position `after`."""
    entries = task.activity.filter(position__gt=after).order_by("position")  # positions start at 1
    return list(entries if limit is None else entries[:limit])


def events_after(task_id: str, after_seq: int, limit: int = 1000) -> list[TaskEvent]:
    return list(TaskEvent.objects.filter(task_id=task_id, seq__gt=after_seq).order_by("seq")[:limit])


# --------------------------------------------------------------------------------------------
# Internal writers (called inside an action's transaction)


def _locked_task(actor: Actor, task_id: str) -> Task:
    """The caller's organization's task, its row locked for this transaction (one query)."""
    try:
        return (
            Task.objects.select_for_update(of=("self",))
            .select_related("agent")
            .get(pk=task_id, organization_id=actor.organization_id)
        )
    except (Task.DoesNotExist, ValueError):
        raise NotFound(f"Task {task_id} not found") from None


def _task_for_update(task_id: str) -> Task:
    return Task.objects.select_for_update(of=("self",)).select_related("agent").get(pk=task_id)


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


def _save(task: Task, *fields: str) -> None:
    task.updated_at = timezone.now()
    task.save(update_fields=[*fields, "updated_at"])


def _snapshot(task: Task) -> dict[str, Any]:
    return wire.task_json(task)


def _finish(
    task: Task, status: str, result: str | None, *, manually: bool = False, duration: float | None = None
) -> None:
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
    _save(
        task,
        "status",
        "result",
        "finished_at",
        "lease_owner",
        "lease_expires_at",
        "is_manually_stopped",
        "duration",
    )
    snapshot = _snapshot(task)
    _append_events(task, [("task_updated", snapshot), ("task_finished", snapshot)])


def _require_writer(actor: Actor) -> None:
    if not actor.can(Role.MEMBER):
        raise Forbidden("Your role (viewer) may read tasks but not create or change them")


# --------------------------------------------------------------------------------------------
# Creation


def _validate_create(data: TaskCreateIn, uploads: int = 0) -> None:
    text = data.input.text or ""
    if len(text) > settings.TASK_PROMPT_MAX_CHARS:
        raise TooLarge(
            f"Prompt is {len(text)} characters; the limit is {settings.TASK_PROMPT_MAX_CHARS}",
            limit=settings.TASK_PROMPT_MAX_CHARS,
        )
    if len(data.input.files) + len(data.input.attachments) + uploads > settings.TASK_MAX_FILES:
        raise Invalid("input.files", f"at most {settings.TASK_MAX_FILES} files per task")


@_action
def create_task(
    actor: Actor,
    agent_id: str,
    data: TaskCreateIn,
    *,
    parent: Task | None = None,
    uploads: dict[str, str] | None = None,
) -> Task:
    """Create a task (or continue one, when data.id names an existing task) and dispatch it."""
    if actor.role != SYSTEM:
        _require_writer(actor)
    _validate_create(data, len(uploads or {}))
    agent = get_agent(actor, agent_id)
    if data.id:
        return _continue_task(actor, agent, data, uploads)
    if parent is not None:  # a sub-agent's task runs as its parent's user
        owner, input_user = vault.owner_of(parent), data.input.user.model_dump() if data.input.user else None
    else:
        owner, input_user = _vault_identity(actor, data.input.user)
    files = list(data.input.files) + list(uploads or {})
    with transaction.atomic():
        task = Task(
            organization_id=agent.organization_id,
            agent=agent,
            parent=parent,
            triggering_agent_id=data.triggering_agent_id or (parent.agent_id if parent else ""),
            created_by_key_id=actor.api_key_id,
            created_by_user_id=actor.user_id,
            input_text=data.input.text or "",
            input_files=files,
            input_attachments=[a.model_dump(exclude_none=True) for a in data.input.attachments],
            uploads=dict(uploads or {}),
            input_user=input_user,
            user_id=(input_user or {}).get("id") or "",
            vault_member_id=owner.member_id,
            vault_external_id=owner.external_id,
            user_tokens_encrypted=crypto.encrypt_json(data.user_tokens) if data.user_tokens else "",
            events_streaming=data.events_streaming,
            title=data.title or "",
            source=data.source or "",
            output_format=data.output_format or agent.output_format or "",
            output_schema=data.output_schema,
            payload_extension=data.payload_extension,
            additional_context=data.additional_context or "",
            instructions_override=data.instructions_override or "",
            expected_output=data.expected_output or "",
            think_mode=data.think_mode or "default",
            disable_attachment_injection=data.disable_attachment_injection,
            tool_call_limit=data.tool_call_limit
            if data.tool_call_limit is not None
            else agent.tool_call_limit,
            llm_model_provider=data.llm_model_provider or "",
            llm_model_name=data.llm_model_name or "",
            llm_reasoning_effort=data.llm_reasoning_effort or "",
            return_metrics=data.return_metrics,
            run_locally=data.run_locally,
        )
        task.save(force_insert=True)
        if data.user_tokens and parent is None:
            vault.hold_task_tokens(agent, owner, data.user_tokens)
        _append_activity(task, ActivityKind.MESSAGE, _user_message(task, task.input_text, files))
        _append_events(task, [("task_created", _snapshot(task))])
        if agent.framework == Framework.BUILTIN:
            transaction.on_commit(functools.partial(dispatch.dispatch, task.id))
    return task


def _vault_identity(actor: Actor, user: UserIn | None) -> tuple[vault.Owner, dict[str, Any] | None]:
    """Who a task's turn runs as (its vault owner) and the input.user stored for it.

    A service key may name any end user, or a member by vault_id; without input.user it runs as its
    own member. Any other caller (a member's key, a console session) acts as that member only, and
    its input.user is filled with the member's vault_id and email so external workers' get_token works.
    """
    if actor.is_service_key or actor.role == SYSTEM:
        if user is not None:
            return vault.resolve(actor.organization_id, user.id or ""), user.model_dump()
        return actor.as_member, None  # its own tasks run as its member; input.user stays as the SDK sent it
    if actor.member_id is None:  # no member behind the caller: it holds nobody's tokens
        return vault.NOBODY, user.model_dump() if user is not None else None
    if user is not None:
        other_id = (user.id or "") not in ("", actor.vault_id)
        other_email = bool(user.email) and user.email.strip().lower() != actor.user_email.lower()
        if other_id or other_email:
            raise Forbidden(
                "A member's API key acts as that member: input.user may only name you "
                f"(id {actor.vault_id}, email {actor.user_email}); "
                "tasks for other users need an admin's or owner's key"
            )
    given = user.model_dump() if user is not None else UserIn(email="").model_dump()
    return actor.as_member, {**given, "id": actor.vault_id, "email": actor.user_email}


def _same_user(owner: vault.Owner, input_user: dict[str, Any] | None, task: Task) -> bool:
    """Whether a follow-up turn is by the user of the task's last turn (then it keeps their tokens)."""
    if owner != vault.owner_of(task):
        return False
    if owner:
        return True

    def who(u: dict[str, Any] | None) -> tuple[str, str]:
        return ((u or {}).get("id") or "", ((u or {}).get("email") or "").lower())

    return who(input_user) == who(task.input_user)  # users without a vault identity: by id and email


def _user_message(task: Task, text: str, files: list[str]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": {"text": text, "files": files}}
    if task.input_user and task.input_user.get("email"):
        message["user"] = task.input_user
    return message


def _continue_task(actor: Actor, agent: Agent, data: TaskCreateIn, uploads: dict[str, str] | None) -> Task:
    """A follow-up turn: the same task goes back to executing with a new user message."""
    # Without input.user a service key continues the conversation of the task's user.
    named = data.input.user is not None or not (actor.is_service_key or actor.role == SYSTEM)
    turn = _vault_identity(actor, data.input.user) if named else None
    with transaction.atomic():
        try:
            task = (
                Task.objects.select_for_update(of=("self",))
                .select_related("agent")
                .get(pk=data.id, organization_id=actor.organization_id, agent_id=agent.id)
            )
        except Task.DoesNotExist:
            raise NotFound(f"Task {data.id} not found for agent {agent.id}") from None
        if task.status not in TERMINAL_STATUSES:
            raise Conflict(
                f"Task {task.id} is {task.status}; a follow-up needs a finished task", status=task.status
            )
        previous = task.duration or 0.0
        task.turns += 1
        task.status = Status.PENDING
        task.result = None
        task.finished_at = None
        task.started_at = None
        task.stop_requested_at = None
        task.is_manually_stopped = False
        task.attempts = 0
        task.input_text = data.input.text or ""
        task.input_files = list(data.input.files)
        task.input_attachments = [a.model_dump(exclude_none=True) for a in data.input.attachments]
        task.input_files = [*task.input_files, *(uploads or {})]
        task.uploads = {**(task.uploads or {}), **(uploads or {})}
        owner, input_user = turn or (vault.owner_of(task), task.input_user)
        if data.input.user is None and owner == vault.owner_of(task):
            input_user = task.input_user  # the same user goes on: keep what they said about themselves
        if not _same_user(owner, input_user, task):
            # Another user's turn: it must not call MCP servers with the previous user's tokens.
            task.user_tokens_encrypted = crypto.encrypt_json(data.user_tokens) if data.user_tokens else ""
        elif data.user_tokens:
            task.user_tokens_encrypted = crypto.encrypt_json({**task_user_tokens(task), **data.user_tokens})
        task.input_user = input_user
        task.user_id = (input_user or {}).get("id") or ""
        task.vault_member_id, task.vault_external_id = owner.member_id, owner.external_id
        if data.user_tokens:
            vault.hold_task_tokens(agent, owner, data.user_tokens)
        task.events_streaming = task.events_streaming or data.events_streaming
        task.metrics = {**(task.metrics or {}), "duration_before_turn": previous}
        _save(
            task,
            "turns",
            "status",
            "result",
            "finished_at",
            "started_at",
            "stop_requested_at",
            "is_manually_stopped",
            "attempts",
            "input_text",
            "input_files",
            "input_attachments",
            "input_user",
            "user_id",
            "vault_member",
            "vault_external_id",
            "uploads",
            "user_tokens_encrypted",
            "events_streaming",
            "metrics",
        )
        _append_activity(task, ActivityKind.MESSAGE, _user_message(task, task.input_text, task.input_files))
        _append_events(task, [("task_updated", _snapshot(task))])
        if agent.framework == Framework.BUILTIN:
            transaction.on_commit(functools.partial(dispatch.dispatch, task.id))
    return task


# --------------------------------------------------------------------------------------------
# Execution (the runtime's side): claim, lease, progress, finish


@_action
def claim_task(task_id: str, worker_id: str, lease_seconds: float) -> Task | None:
    """Claim a pending task with a conditional UPDATE; None when someone else got it first."""
    now = timezone.now()
    expires = now + timezone.timedelta(seconds=lease_seconds)
    with transaction.atomic():
        claimed = Task.objects.filter(
            pk=task_id, status=Status.PENDING, stop_requested_at__isnull=True
        ).update(
            status=Status.EXECUTING,
            lease_owner=worker_id,
            lease_expires_at=expires,
            started_at=now,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
        if not claimed:
            return None
        task = _task_for_update(task_id)
        _append_events(task, [("task_updated", _snapshot(task))])
    return task


def renew_lease(task_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the task was stopped, finished or taken over (stop running)."""
    expires = timezone.now() + timezone.timedelta(seconds=lease_seconds)
    return bool(
        Task.objects.filter(
            pk=task_id, lease_owner=worker_id, status=Status.EXECUTING, stop_requested_at__isnull=True
        ).update(lease_expires_at=expires)
    )


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
    with transaction.atomic():
        task = _task_for_update(task_id)
        if worker_id is not None and (task.status != Status.EXECUTING or task.lease_owner != worker_id):
            return []
        secrets = _task_secrets(task) if secrets is None else list(secrets)
        for kind, data in activity:
            _append_activity(task, kind, data, secrets)
        return _append_events(task, events, secrets)


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
) -> Task | None:
    """Finish a running task unless it already finished (a stop may have won the race)."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status} is not a final status")
    with transaction.atomic():
        task = _task_for_update(task_id)
        if task.is_finished or (worker_id is not None and task.lease_owner != worker_id):
            return None
        if tokens:
            task.tokens = _add_tokens(task.tokens, tokens)
            _save(task, "tokens")
        if used_tools:
            task.used_tools = [*(task.used_tools or []), *used_tools]
            _save(task, "used_tools")
        if final_message is not None:
            _append_activity(
                task, ActivityKind.MESSAGE, {"role": "agent", "content": {"text": final_message}}
            )
        _finish(task, status, result)
    return task


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


@_action
def requeue_expired(max_attempts: int) -> list[str]:
    """Reaper: give tasks whose lease expired back to the queue, or fail them after max_attempts."""
    now = timezone.now()
    requeued: list[str] = []
    expired = list(  # external agents' deliveries have their own reaper (actions_workers)
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


# --------------------------------------------------------------------------------------------
# Changes from users: stop, update, internal status, pushed events


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
        task.stop_requested_at = timezone.now()
        _save(task, "stop_requested_at")
        if not running_here:
            _finish(task, Status.STOPPED, task.result or "Stopped by request", manually=True)
        children = list(
            Task.objects.filter(parent_id=task.id)
            .exclude(status__in=TERMINAL_STATUSES)
            .values_list("id", flat=True)
        )
        if running_here:
            transaction.on_commit(functools.partial(dispatch.request_cancel, task.id))
    for child in children:
        with contextlib.suppress(Conflict):
            stop_task(Actor(task.organization_id, SYSTEM), child)
    return task


@_action
def force_stop(task_id: str, reason: str) -> Task | None:
    """Finish a stop its worker did not complete in time (the worker's later finish then loses)."""
    with transaction.atomic():
        task = _task_for_update(task_id)
        if task.is_finished:
            return None
        _finish(task, Status.STOPPED, task.result or reason, manually=True)
    return task


@_action
def update_task(actor: Actor, task_id: str, data: TaskUpdateIn, *, fields: set[str], full_dump: bool) -> Task:
    """Apply PATCH .../update: a sparse update, or the SDK's full dump from save()/set_status()."""
    _require_writer(actor)
    with transaction.atomic():
        task = _locked_task(actor, task_id)
        changed: list[str] = []
        if "internal_status" in fields:
            changed += _set_internal_status(task, data.internal_status, actor)
        new_status = data.status if "status" in fields else None
        if new_status and new_status != task.status:
            if task.is_finished:
                if not full_dump:
                    raise Conflict(
                        f"Task {task.id} is already {task.status}; it cannot become {new_status}",
                        status=task.status,
                    )
                new_status = None  # a stale copy's save(): keep the final status, still store the rest
            elif full_dump and new_status == Status.PENDING:
                new_status = None  # pending is only ever the initial state: a stale copy cannot rewind a run
            elif task.agent.framework == Framework.BUILTIN and new_status not in TERMINAL_STATUSES:
                # The server drives a built-in agent's run; only finishing it is up to the caller.
                if not full_dump:
                    raise Conflict(
                        f"Task {task.id} is run by the server; it can be finished or stopped, not set {new_status}",
                        status=task.status,
                    )
                new_status = None
        elif new_status == task.status:
            new_status = None
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


PUSHABLE_EVENTS = {
    "chunk",
    "tool_call_request",
    "tool_call_result",
    "think",
    "analyze",
    "sub_agent_trigger",
    "auth_event",
    "plan_updated",
    "context_status",
    "process_update",
}


@_action
def push_events(actor: Actor, task_id: str, events: list[tuple[str, Any]]) -> list[TaskEvent]:
    """Events an external worker pushes: relayed to subscribers and mirrored into the activity log."""
    _require_writer(actor)
    for index, (type_, _data) in enumerate(events):
        if type_ not in PUSHABLE_EVENTS:
            raise Invalid(
                f"[{index}].type", f"{type_!r} cannot be pushed; one of {', '.join(sorted(PUSHABLE_EVENTS))}"
            )
    with transaction.atomic():
        task = _locked_task(actor, task_id)
        if task.is_finished:
            raise Conflict(
                f"Task {task.id} is already {task.status}; it takes no more events", status=task.status
            )
        secrets = _task_secrets(task) + vault.tokens_of(task)
        for type_, data in events:
            entry = _activity_from_event(type_, data)
            if entry:
                _append_activity(task, *entry, secrets)
        return _append_events(task, events, secrets)


def _activity_from_event(type_: str, data: Any) -> tuple[str, dict[str, Any]] | None:
    """The activity entry a pushed event stands for, if any (chunks are not activity)."""
    if type_ in {"think", "analyze"}:
        if isinstance(data, dict):
            thought, title = data.get("thought") or data.get("text") or "", data.get("title") or ""
        else:
            thought, title = "" if data is None else str(data), ""
        return ActivityKind.REASONING, {
            "type": type_,
            "title": str(title),
            "confidence": 1.0,
            "thought": str(thought),
        }
    if not isinstance(data, dict):
        return None
    if type_ == "tool_call_result":
        return ActivityKind.TOOL_CALL, {
            "tool_name": data.get("tool_name") or data.get("operation_id") or "tool",
            "payload": data.get("payload"),
            "result": data.get("result"),
            "is_error": bool(data.get("is_error", False)),
            "graph_item_id": data.get("graph_node_id"),
        }
    if type_ == "sub_agent_trigger":
        return ActivityKind.SUB_AGENT_TRIGGER, {
            "agent_id": data.get("agent_id", ""),
            "query": data.get("query"),
            "reasoning": data.get("reasoning") if isinstance(data.get("reasoning"), dict) else {},
        }
    if type_ == "auth_event" and data.get("type") in {
        "not_supported",
        "login_required",
        "token_issue",
        "token_ready",
    }:
        return ActivityKind.AUTH, {"type": data["type"], "data": data.get("data") or {}}
    return None


# The form of the ids the server mints (console.models.new_id): a report may not invent one, so
# an unknown id of this form and another organization's task answer alike (404).
SERVER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@_action
def report_external_task(actor: Actor, agent_id: str, data: TaskReportIn) -> Task:
    """A task that ran outside the server lands finished, with its activity and task_finished event."""
    _require_writer(actor)
    agent = get_agent(actor, agent_id)
    text = data.input or ""
    if len(text) > settings.TASK_PROMPT_MAX_CHARS:
        raise TooLarge(f"Input is {len(text)} characters; the limit is {settings.TASK_PROMPT_MAX_CHARS}")
    if data.llm_response is not None:
        _check_report_size("llm_response", data.llm_response)
    answer = data.result if data.result is not None else _response_text(data.llm_response)
    status = Status.COMPLETED if data.is_success else Status.FAILED
    with transaction.atomic():
        existing = None
        if data.id:
            existing = (
                Task.objects.select_for_update(of=("self",))
                .filter(pk=data.id, organization_id=actor.organization_id)
                .first()
            )
            if existing is None and (
                SERVER_ID.fullmatch(data.id) or Task.objects.filter(pk=data.id).exists()
            ):
                # Another organization's task answers as an unknown one: no existence oracle.
                raise NotFound(f"Task {data.id} not found")
        if existing is not None:
            if existing.agent_id != agent.id:
                raise Conflict("This task id cannot be used; omit it or choose another")
            if existing.is_finished:
                raise Conflict(f"Task {existing.id} is already {existing.status}", status=existing.status)
            task = existing
        else:
            task = Task(
                organization_id=agent.organization_id,
                agent=agent,
                created_by_key_id=actor.api_key_id,
                created_by_user_id=actor.user_id,
                input_text=text,
                source="external_report",
                status=Status.EXECUTING,
                events_streaming=True,  # its log (task_created .. task_finished) is there to stream
            )
            if data.id:
                task.id = data.id
            try:
                with transaction.atomic():
                    task.save(force_insert=True)
            except IntegrityError:  # the same new id, reported at the same moment by someone else
                raise NotFound(f"Task {data.id} not found") from None
            _append_activity(task, ActivityKind.MESSAGE, _user_message(task, text, []))
            _append_events(task, [("task_created", _snapshot(task))])
        if data.tokens:
            task.tokens = _add_tokens(task.tokens, data.tokens.model_dump())
        task.used_tools = [*(task.used_tools or []), *(data.used_tools or [])]
        if data.llm_response is not None:
            task.metrics = {
                **(task.metrics or {}),
                "llm_response": mask(data.llm_response, _task_secrets(task)),
            }
        task.started_at = task.started_at or task.created_at
        _save(task, "tokens", "used_tools", "metrics", "started_at")
        if answer:
            _append_activity(task, ActivityKind.MESSAGE, {"role": "agent", "content": {"text": answer}})
        _finish(task, status, answer, duration=float(data.duration) if data.duration else None)
    return task


def _check_report_size(what: str, value: Any) -> None:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > settings.METRICS_REPORT_MAX_BYTES:
        raise TooLarge(
            f"{what} is {size} bytes as JSON; the limit is {settings.METRICS_REPORT_MAX_BYTES}",
            limit=settings.METRICS_REPORT_MAX_BYTES,
        )


def _response_text(response: Any) -> str | None:
    """The answer text of a raw LLM response (a string, or an OpenAI-style object)."""
    if response is None or isinstance(response, str):
        return response
    if isinstance(response, dict):
        for key in ("content", "text", "output", "result"):
            if isinstance(response.get(key), str):
                return response[key]
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            if isinstance(message.get("content"), str):
                return message["content"]
    return None


@_action
def record_metrics(actor: Actor, agent_id: str, data: MetricsReportIn) -> Task:
    """Store an execution metrics report against its task (the SDK's task.report_metrics())."""
    _require_writer(actor)
    report = data.model_dump(mode="json")
    _check_report_size("Metrics report", report)
    keep = max(settings.METRICS_REPORTS_PER_TASK, 1)
    with transaction.atomic():
        task = _locked_task(actor, data.execution_id)
        if task.agent_id != agent_id:
            raise NotFound(f"Task {data.execution_id} not found for agent {agent_id}")
        # The newest reports are kept: a task's row must not grow without end.
        reports = list((task.metrics or {}).get("reports", []))[-(keep - 1) :] if keep > 1 else []
        reports.append(mask(report, _task_secrets(task)))
        task.metrics = {**(task.metrics or {}), "reports": reports}
        _save(task, "metrics")
    return task


# Async twins for callers on an event loop (async views, SSE, the runtime).
acreate_task = _async_twin(create_task.__wrapped__)
aclaim_task = _async_twin(claim_task.__wrapped__)
arecord_progress = _async_twin(record_progress.__wrapped__)
afinish_task = _async_twin(finish_task.__wrapped__)
astop_task = _async_twin(stop_task.__wrapped__)
aforce_stop = _async_twin(force_stop.__wrapped__)
arequeue_expired = _async_twin(requeue_expired.__wrapped__)
arelease_task = _async_twin(release_task.__wrapped__)

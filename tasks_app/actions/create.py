"""Creating tasks and continuing them with a follow-up turn; who a task's user is for the vault."""

from __future__ import annotations

import copy
import functools
from typing import Any

from django.conf import settings
from django.db import transaction

from console import crypto, vault
from console.access import SYSTEM, Actor
from console.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from console.models import Agent, Framework
from console.prepared import Appends
from tasks_app import dispatch
from tasks_app.actions.log import (
    _action,
    _append_activity,
    _append_events,
    _async_twin,
    _store_activity,
    _store_events,
    task_user_tokens,
)
from tasks_app.actions.reads import get_agent
from tasks_app.actions.rows import TASK_ROW, _claim_columns, _require_writer, _save, _snapshot
from tasks_app.models import (
    TERMINAL_STATUSES,
    ActivityKind,
    Status,
    Task,
)
from tasks_app.schemas import TaskCreateIn, UserIn


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
    seat = _seat_for(agent)
    try:
        return _create(actor, agent, data, parent, uploads, owner, input_user, files, seat)
    except BaseException:
        if seat is not None:
            seat.give_back()
        raise


acreate_task = _async_twin(create_task.__wrapped__)


def _seat_for(agent: Agent) -> dispatch.Seat | None:
    """A run slot of this process's pool for a built-in agent's task, claimed by its create.

    Only when the create's transaction is the outermost: inside a caller's transaction the commit
    (and so the start of the run) is not the create's to decide, and the hint goes on commit as before.
    """
    if agent.framework != Framework.BUILTIN or transaction.get_connection().in_atomic_block:
        return None
    return dispatch.take_seat()


def _create(
    actor: Actor,
    agent: Agent,
    data: TaskCreateIn,
    parent: Task | None,
    uploads: dict[str, str] | None,
    owner: vault.Owner,
    input_user: dict[str, Any] | None,
    files: list[str],
    seat: dispatch.Seat | None,
) -> Task:
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
        # Its first activity entry and event are counted in the INSERT itself (no UPDATE after).
        task.last_activity, task.last_seq = 1, 1
        _TASKS.insert_one(task)  # task.save(force_insert=True), its INSERT built once (console.prepared)
        task.last_activity, task.last_seq = 0, 0  # the stores below append at 1 and count to 1 again
        task.mark_no_sub_tasks()  # just made: its snapshots (the event, the response) need no query
        if data.user_tokens and parent is None:
            vault.hold_task_tokens(agent, owner, data.user_tokens)
        _store_activity(task, [(ActivityKind.MESSAGE, _user_message(task, task.input_text, files))])
        if seat is not None:  # claimed for this process's pool: the run starts from it on commit
            transaction.on_commit(functools.partial(seat.start, _claim_new(task, seat)))
            task.last_seq = 1  # as created: its task_created
        else:
            _store_events(task, [("task_created", _snapshot(task))])
            if agent.framework == Framework.BUILTIN:
                transaction.on_commit(functools.partial(dispatch.dispatch, task.id))
    return task


_TASKS = Appends(Task)


def _claim_new(task: Task, seat: dispatch.Seat) -> Task:
    """Claim the task just inserted for `seat`'s pool, in the create's transaction; the run's copy.

    The same row and events as a claim by the pool (actions.claim_task): executing under the
    pool's lease, attempt 1, task_created then task_updated. `task` itself stays as created (the
    create's response); the run gets a copy of its own, as the claim's read would give it. The copy
    is shallow: the two share the JSON fields' values and the agent, which neither changes in place.
    """
    created = _snapshot(task)
    run = copy.copy(task)
    claim = {**_claim_columns(seat.worker_id, seat.lease_seconds), "attempts": 1}
    for column, value in claim.items():
        setattr(run, column, value)
    _store_events(run, [("task_created", created), ("task_updated", _snapshot(run))])
    run.forget_no_sub_tasks()  # the run may delegate: later snapshots ask again
    TASK_ROW.set(task.id, {**claim, "last_seq": run.last_seq})
    return run


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

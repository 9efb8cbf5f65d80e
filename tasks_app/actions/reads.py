"""Reads of the task API, scoped to the actor's organization: another organization's rows are a 404."""

from __future__ import annotations

from console.access import Actor
from console.errors import Invalid, NotFound
from console.models import Agent
from console.prepared import KeyedRead
from tasks_app.models import (
    ActivityEntry,
    Status,
    Task,
    TaskEvent,
)


def get_agent(actor: Actor, agent_id: str) -> Agent:
    try:
        return _AGENT.get(agent_id, actor.organization_id)  # every create reads it: compiled once
    except (Agent.DoesNotExist, ValueError):
        raise NotFound(f"Agent {agent_id} not found") from None


_AGENT = KeyedRead(
    Agent, lambda agent_id, org_id: Agent.objects.filter(pk=agent_id, organization_id=org_id), 2
)


def task_agent(task: Task) -> Agent:
    """The agent of `task` as `task.agent` loads it, with the compiled read every create uses.

    For the runtime's claim, which reads the task's row alone (locked) and then its agent.
    """
    return _AGENT.get(task.agent_id, task.organization_id)


def get_task(actor: Actor, task_id: str) -> Task:
    try:
        return Task.objects.select_related("agent").get(pk=task_id, organization_id=actor.organization_id)
    except (Task.DoesNotExist, ValueError):
        raise NotFound(f"Task {task_id} not found") from None


def task_scope(actor: Actor, task_id: str) -> tuple[str, str]:
    """(id, organization id) of a task the actor may see; what a stream needs, without the row."""
    try:
        found = _SCOPE.get(task_id, actor.organization_id)  # every stream opens with it: compiled once
    except Task.DoesNotExist:
        raise NotFound(f"Task {task_id} not found") from None
    return found.id, found.organization_id


_SCOPE = KeyedRead(
    Task,
    lambda task_id, org_id: Task.objects.only("id", "organization_id").filter(
        pk=task_id, organization_id=org_id
    ),
    2,
)


def task_scope_and_progress(actor: Actor, task_id: str) -> Task:
    """`task_scope` with the task's status and last_seq (what a stream's first read of the log needs),
    in the same row read: a Task with only id, organization_id, status and last_seq loaded."""
    try:
        return _SCOPE_AND_PROGRESS.get(task_id, actor.organization_id)  # every stream opens with it
    except Task.DoesNotExist:
        raise NotFound(f"Task {task_id} not found") from None


_SCOPE_AND_PROGRESS = KeyedRead(
    Task,
    lambda task_id, org_id: Task.objects.only("id", "organization_id", "status", "last_seq").filter(
        pk=task_id, organization_id=org_id
    ),
    2,
)


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

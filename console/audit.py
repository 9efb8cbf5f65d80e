"""The audit log: who changed what, when and from which address.

Every change function (agents, members, keys, tasks changed by a caller, sign-ins) calls `record`
inside its own transaction, so an entry exists exactly when its change committed. Secrets are
never written: a secret field's change is recorded as "changed". The address comes from the
request being served (set by `AuditAddressMiddleware`), so task-API and agent functions need no
request argument.
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from console.models import AuditEvent

if TYPE_CHECKING:  # access imports models only, but keep audit importable from anywhere in console
    from console.access import Actor

SECRET = "changed"  # what a secret's change shows instead of its values
# The request's REMOTE_ADDR as the server gave it; cleaned only when an entry is written (most
# requests write none, and parsing an address on each was 0.3 % of the server's CPU per agent run).
_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_address", default=None)


def _clean_address(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((value or "").strip()))
    except ValueError:
        return None


def _address() -> str | None:
    """The client address of the request being served, as an IP address (None if none or not one)."""
    return _clean_address(_ADDRESS.get())


class AuditAddressMiddleware:
    """Remember the request's client address for the audit entries written while it is served."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.is_async:
            return self.__acall__(request)
        token = _ADDRESS.set(request.META.get("REMOTE_ADDR"))
        try:
            return self.get_response(request)
        finally:
            _ADDRESS.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = _ADDRESS.set(request.META.get("REMOTE_ADDR"))
        try:
            return await self.get_response(request)
        finally:
            _ADDRESS.reset(token)


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a field value (dates as ISO text, enums as their value)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value.value if hasattr(value, "value") else value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def diff(
    before: Mapping[str, Any], after: Mapping[str, Any], secret: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """The fields that differ, as {field: {"from": old, "to": new}}; secrets only as "changed"."""
    secret = set(secret)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new or (_empty(old) and _empty(new)):  # "" -> None is no change worth a line
            continue
        out[name] = {SECRET: True} if name in secret else {"from": _plain(old), "to": _plain(new)}
    return out


def record(
    actor: Actor | None,
    action: str,
    *,
    organization_id: str | None = None,
    object_type: str = "",
    object_id: Any = "",
    object_label: str = "",
    changes: Mapping[str, Any] | None = None,
    user_id: int | None = None,
    label: str = "",
) -> AuditEvent:
    """Write one entry; call it inside the transaction of the change it records.

    `actor` is the caller (member or key); sign-ins pass `user_id` and `label` instead.
    """
    if actor is not None:
        label = f"{actor.user_email} · key {actor.label}" if actor.api_key_id else actor.label
    return AuditEvent.objects.create(
        organization_id=organization_id or (actor.organization_id if actor else None),
        actor_user_id=actor.user_id if actor else user_id,
        actor_key_id=actor.api_key_id if actor else None,
        actor_label=(label or "")[:254],
        address=_address(),
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:200],
        object_label=(object_label or "")[:200],
        changes=_plain(dict(changes or {})),
    )


# --------------------------------------------------------------------------------------------
# Reading: the /audit/ page, its export and GET /api/v1/audit

ACTIONS = [
    ("agent.created", "Agent created"),
    ("agent.updated", "Agent edited"),
    ("agent.deleted", "Agent deleted"),
    ("key.created", "API key created"),
    ("key.revoked", "API key revoked"),
    ("member.invited", "Member invited"),
    ("member.invitation_revoked", "Invitation revoked"),
    ("member.joined", "Invitation accepted"),
    ("member.role_changed", "Role changed"),
    ("member.deactivated", "Member deactivated"),
    ("member.reactivated", "Member reactivated"),
    ("member.profile_changed", "Profile edited"),
    ("task.stopped", "Task stopped"),
    ("task.updated", "Task updated"),
    ("retention.changed", "Retention changed"),
    ("retention.purged", "Old tasks purged"),
    ("signin.succeeded", "Signed in"),
    ("signin.failed", "Failed sign-in"),
]
ACTION_LABELS = dict(ACTIONS)


def entries(
    organization_id: str,
    *,
    actor: str = "",
    action: str = "",
    object_id: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """The organization's entries, newest first, filtered; a QuerySet, so pages and exports stream."""
    rows = AuditEvent.objects.filter(organization_id=organization_id)
    if actor:
        rows = rows.filter(actor_label__icontains=actor)
    if action:
        rows = rows.filter(action=action) if "." in action else rows.filter(action__startswith=action + ".")
    if object_id:
        rows = rows.filter(Q(object_id=object_id) | Q(object_label__icontains=object_id))
    tz = timezone.get_current_timezone()
    if since:
        rows = rows.filter(created_at__gte=datetime.combine(since, time.min, tz))
    if until:
        rows = rows.filter(created_at__lt=datetime.combine(until + timedelta(days=1), time.min, tz))
    return rows.order_by("-created_at", "-id")


def entry_json(entry: AuditEvent) -> dict[str, Any]:
    """One entry as the API and the JSONL export give it."""
    return {
        "id": entry.pk,
        "created_at": entry.created_at.isoformat(),
        "actor": entry.actor_label,
        "actor_user_id": entry.actor_user_id,
        "actor_key_id": entry.actor_key_id,
        "address": entry.address,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "object_label": entry.object_label,
        "changes": entry.changes,
    }


TASK_FIELDS = ("status", "internal_status", "title", "source", "last_executed_node_id", "result")


def task_fields(task: Any) -> dict[str, Any]:
    """The audited fields of a task, read before a change for `record_task`."""
    return {name: getattr(task, name) for name in TASK_FIELDS}


def record_task(actor: Actor, task: Any, action: str, before: Mapping[str, Any] | None = None) -> None:
    """Record a caller's stop or update of a task (never the runtime's own writes).

    The result is recorded only as "changed": it can be long, and the task's own log holds it.
    """
    if actor.role == "system":
        return
    changes = diff(before, task_fields(task), secret=("result",)) if before is not None else {}
    if action == "task.updated" and not changes:
        return
    record(
        actor,
        action,
        object_type="task",
        object_id=task.id,
        object_label=(task.title or "")[:200],
        changes=changes,
    )


def record_sign_in(user: Any, *, succeeded: bool, email: str = "") -> None:
    """A sign-in or a failed one, in each organization of the account (or none for an unknown email)."""
    from console.models import Membership

    action = "signin.succeeded" if succeeded else "signin.failed"
    label = (user.email if user is not None else email.strip().lower())[:254]
    orgs = (
        list(Membership.objects.filter(user=user).values_list("organization_id", flat=True)) if user else []
    )
    for organization_id in orgs or [None]:
        AuditEvent.objects.create(
            organization_id=organization_id,
            actor_user=user,
            actor_label=label,
            address=_address(),
            action=action,
            object_type="user",
            object_id=str(user.pk) if user else "",
            object_label=label,
        )

"""/api/v1/keys and /api/v1/audit: key rotation and the audit log over REST, for a service key."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field

from console import audit, keys
from console.errors import BadRequest, Forbidden
from console.ids import row_id
from console.models import Role
from tasks_app import openapi as doc
from tasks_app.actions import Actor
from tasks_app.rest import json_body, parse

keys_router = Router()
audit_router = Router()
AUDIT_PAGE_MAX = 500


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=keys.NAME_MAX)
    role: Literal["owner", "admin", "member", "viewer"] | None = None


class KeyOut(doc.Out):
    id: int
    name: str
    prefix: str
    last4: str
    role: str | None
    effective_role: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The raw key: shown this once, never stored")


class AuditEntryOut(doc.Out):
    id: int
    created_at: datetime
    actor: str
    actor_user_id: int | None
    actor_key_id: int | None
    address: str | None
    action: str
    object_type: str
    object_id: str
    object_label: str
    changes: dict[str, Any]


def _service_key(request: HttpRequest) -> Actor:
    actor: Actor = request.auth
    if not actor.can(Role.ADMIN):
        raise Forbidden(f"This needs an admin's or owner's key; this key's role is {actor.role}")
    return actor


@keys_router.get("", response=doc.responses(list[KeyOut], 403))
def list_keys(request: HttpRequest) -> HttpResponse:
    rows = keys.organization_keys(_service_key(request))
    return JsonResponse([keys.key_json(k) for k in rows], safe=False)


@keys_router.post(
    "", response=doc.responses(NewKeyOut, *doc.BODY, 403, status=201), openapi_extra=doc.body(KeyIn)
)
def create_key(request: HttpRequest) -> HttpResponse:
    actor = _service_key(request)
    data = parse(KeyIn, json_body(request))
    new = keys.create_key(actor, data.name, data.role or "")
    return JsonResponse({**keys.key_json(new.key), "key": new.raw}, status=201)


@keys_router.delete("/{key_id}", response=doc.responses(None, 403, 409, status=204))
def revoke_key(request: HttpRequest, key_id: str) -> HttpResponse:
    keys.revoke_key(_service_key(request), key_id)
    return HttpResponse(status=204)


def _date(request: HttpRequest, name: str) -> date | None:
    value = request.GET.get(name, "")
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name}: a date as YYYY-MM-DD", field=name) from None


@audit_router.get(
    "",
    response=doc.responses(list[AuditEntryOut], 403),
    openapi_extra=doc.query(
        ("actor", {"type": "string"}, "Part of the actor's email or key name"),
        ("action", {"type": "string"}, "An action (key.revoked) or its group (key)"),
        ("object", {"type": "string"}, "An object's id, or part of its name"),
        ("since", {"type": "string", "format": "date"}, "From this day (YYYY-MM-DD)"),
        ("until", {"type": "string", "format": "date"}, "Up to and including this day"),
        ("limit", {"type": "integer", "minimum": 1, "maximum": AUDIT_PAGE_MAX}, "At most this many"),
        ("before", {"type": "integer"}, "Entries older than this id (the next page)"),
    ),
)
def list_audit(request: HttpRequest) -> HttpResponse:
    actor = _service_key(request)
    try:
        limit = min(max(int((request.GET.get("limit") or "100")[:6]), 1), AUDIT_PAGE_MAX)
        before = row_id(request.GET["before"]) if request.GET.get("before") else None
    except ValueError:
        raise BadRequest("limit and before are integers") from None
    rows = audit.entries(
        actor.organization_id,
        actor=request.GET.get("actor", ""),
        action=request.GET.get("action", ""),
        object_id=request.GET.get("object", ""),
        since=_date(request, "since"),
        until=_date(request, "until"),
    )
    if before is not None:
        rows = rows.filter(id__lt=before)
    return JsonResponse([audit.entry_json(e) for e in rows.order_by("-id")[:limit]], safe=False)

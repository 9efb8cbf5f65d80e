"""/api/v1/connections: integrations set, list (masked) and delete an end user's MCP token (service key).

The user is named as in tasks' `input.user.id` (an end user, or a member by vault_id); the server
by its graph item id. Answers never carry a token, only its last 4 characters and its details.
"""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse, JsonResponse
from mcp.shared.auth import OAuthToken
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field

from console import oauth, vault
from console.errors import Forbidden, Invalid, NotFound
from console.models import GraphItem, UserToken
from tasks_app import openapi as doc
from tasks_app.actions import signin as actions_signin
from tasks_app.rest import json_body, parse

router = Router()
MAX_TOKEN = 8192


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(
        min_length=1, max_length=MAX_TOKEN, description="The access token; whitespace around it is trimmed"
    )
    expires_in: int | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, description="Seconds until it expires"
    )


class ConnectionOut(doc.Out):
    user_id: str
    graph_item_key: str
    last4: str = Field(description="The token's last 4 characters; the token itself is never returned")
    source: str = Field(description="task | pasted | oauth | api")
    state: str = Field(description="connected | refresh failing | needs sign-in")
    expires_at: datetime | None
    scopes: str
    created_at: datetime
    last_used_at: datetime | None
    refreshed_at: datetime | None


def _service(request: HttpRequest):
    actor = request.auth
    if not actor.is_service_key:
        raise Forbidden("Connections of other users are managed with an admin's or owner's API key")
    return actor


def _json(row: UserToken, user_id: str) -> dict:
    state = "needs sign-in" if row.needs_signin else "refresh failing" if row.refresh_error else "connected"
    return ConnectionOut(
        user_id=user_id,
        graph_item_key=row.graph_item_key,
        last4=row.last4,
        source=row.source,
        state=state,
        expires_at=row.expires_at,
        scopes=row.scopes,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        refreshed_at=row.refreshed_at,
    ).model_dump(mode="json")


def _owner(organization_id: str, user_id: str) -> vault.Owner:
    """The end user a user id names; a member's connections are theirs to manage in the console."""
    if not user_id.strip() or len(user_id) > 200:
        raise Invalid("user_id", "must be a user id of 1 to 200 characters")
    owner = vault.resolve(organization_id, user_id)
    if owner.is_member:
        raise Forbidden("That user id is a member's: members connect their own accounts on /connections/")
    return owner


@router.get(
    "",
    response=doc.responses(list[ConnectionOut], 403),
    openapi_extra=doc.query(("user_id", {"type": "string"}, "Whose connections (input.user.id)")),
)
def list_connections(request: HttpRequest) -> HttpResponse:
    actor = _service(request)
    user_id = request.GET.get("user_id", "")
    rows = _owner(actor.organization_id, user_id).rows(actor.organization_id).order_by("graph_item_key")
    return JsonResponse([_json(r, user_id) for r in rows], safe=False)


@router.put(
    "/{user_id}/{graph_item_key}",
    response=doc.responses(ConnectionOut, *doc.BODY, 403),
    openapi_extra=doc.body(ConnectionIn),
)
def set_connection(request: HttpRequest, user_id: str, graph_item_key: str) -> HttpResponse:
    actor = _service(request)
    owner = _owner(actor.organization_id, user_id)
    data = parse(ConnectionIn, json_body(request))
    token = data.token.strip()
    if not token or any(c.isspace() for c in token):
        raise Invalid("token", "must be one token without whitespace inside it")
    item = GraphItem.objects.filter(
        agent__organization_id=actor.organization_id, type="mcp", key=graph_item_key
    ).first()
    if item is None:
        raise NotFound(f"No MCP server {graph_item_key} in your organization's agents")
    row = oauth.save_token(
        actor.organization_id,
        owner,
        item.key,
        OAuthToken(access_token=token, expires_in=data.expires_in),
        source="api",
    )
    actions_signin.resume_signed_in(
        actor.organization_id, owner, item.key, item.mcp_settings.get("name") or item.name
    )
    return JsonResponse(_json(row, user_id))


@router.delete("/{user_id}/{graph_item_key}", response=doc.responses(None, 403, status=204))
def delete_connection(request: HttpRequest, user_id: str, graph_item_key: str) -> HttpResponse:
    actor = _service(request)
    owner = _owner(actor.organization_id, user_id)
    deleted, _ = owner.rows(actor.organization_id).filter(graph_item_key=graph_item_key).delete()
    if not deleted:
        raise NotFound(f"{user_id} has no connection to {graph_item_key}")
    return HttpResponse(status=204)

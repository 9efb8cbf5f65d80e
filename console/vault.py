"""The MCP user-token vault: tokens per owner and graph item id, encrypted at rest.

A token's owner is exactly one of a member of the organization (named by their `vault_id`) or an
external end user (an `input.user.id` a service key named), so no two people share a row because
their id strings are equal. The runtime reads it when a task brings no token of its own; tasks that
bring `user_tokens` leave them here for their owner, so the owner's later tasks and external workers
(the SDK's get_token route) can use them. Every token asked for over the API is recorded in
McpTokenAccess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from console import crypto
from console.models import Agent, GraphItem, McpTokenAccess, Membership, UserToken
from console.prepared import KeyedList


@dataclass(frozen=True)
class Owner:
    """Whose tokens: a member (by Membership pk) or an external end user (by id); empty is nobody."""

    member_id: int | None = None
    external_id: str = ""

    def __bool__(self) -> bool:
        return self.member_id is not None or bool(self.external_id)

    @property
    def is_member(self) -> bool:
        return self.member_id is not None

    def rows(self, organization_id: str) -> QuerySet[UserToken]:
        """This owner's vault rows in the organization (none for nobody)."""
        qs = UserToken.objects.filter(organization_id=organization_id)
        if self.member_id is not None:
            return qs.filter(member_id=self.member_id)
        if self.external_id:
            return qs.filter(member__isnull=True, external_user_id=self.external_id)
        return qs.none()


NOBODY = Owner()


def resolve(organization_id: str, user_id: str) -> Owner:
    """The owner a user id names inside an organization: a member by vault_id, else an end user."""
    if not user_id:
        return NOBODY
    member_id = (
        Membership.objects.filter(organization_id=organization_id, vault_id=user_id)
        .values_list("pk", flat=True)
        .first()
    )
    return Owner(member_id=member_id) if member_id is not None else Owner(external_id=user_id)


def owner_of(task: Any) -> Owner:
    """The vault owner of a task's running turn."""
    if task.vault_member_id is not None:
        return Owner(member_id=task.vault_member_id)
    return Owner(external_id=task.vault_external_id or "")


def store(organization_id: str, owner: Owner, graph_item_key: str, token: str, source: str = "task") -> None:
    if not owner:
        raise ValueError("a vault token needs an owner")
    UserToken.objects.update_or_create(
        organization_id=organization_id,
        member_id=owner.member_id,
        external_user_id="" if owner.is_member else owner.external_id,
        graph_item_key=graph_item_key,
        defaults={
            "token_encrypted": crypto.encrypt(token),
            "source": source,
            "expires_at": None,
            "last4": token[-4:],
        },
    )


def hold_task_tokens(agent: Agent, owner: Owner, tokens: dict[str, Any]) -> None:
    """Keep the string tokens a task brought for its owner, for this agent's MCP graph items."""
    if not owner or not tokens:
        return
    keys = set(agent.graph_items.filter(type="mcp").values_list("key", flat=True))
    for key, value in tokens.items():
        if key in keys and isinstance(value, str):
            store(agent.organization_id, owner, key, value, source="task")


class RefreshDue(Exception):
    """A connection asked for is due for a refresh, and the caller said not to refresh it here."""


def usable_rows(
    organization_id: str, owner: Owner, keys: list[str], *, refresh: bool = True
) -> list[UserToken]:
    """The owner's connections for these keys, refreshed first when due; expired or failed ones left out.

    `refresh=False`: a connection due for a refresh raises RefreshDue instead (a caller that must not
    wait for an OAuth server, such as a create's request, leaves the read to the run).
    """
    from console import oauth

    if not owner or not keys:
        return []
    wanted = set(keys)
    rows = [row for row in _signed_in_rows(organization_id, owner) if row.graph_item_key in wanted]
    due = [oauth.due(row) for row in rows]  # once: a token crossing the margin now is due for both uses
    if not refresh and any(due):
        raise RefreshDue
    # A refresh answers the row as it stands after its turn: None if the connection was deleted
    # meanwhile (its user disconnected), and then the row read before it must not be used either.
    refreshed = [oauth.refresh(row.pk) if is_due else row for row, is_due in zip(rows, due, strict=True)]
    rows = [row for row in refreshed if row is not None]
    now = timezone.now()
    usable = [r for r in rows if not r.needs_signin and (r.expires_at is None or r.expires_at > now)]
    if usable:
        UserToken.objects.filter(pk__in=[r.pk for r in usable]).update(last_used_at=now)
    return usable


def _signed_in_rows(organization_id: str, owner: Owner) -> list[UserToken]:
    """`owner.rows(organization_id).filter(needs_signin=False)`, from `_owner_rows`."""
    return [row for row in _owner_rows(organization_id, owner) if not row.needs_signin]


def _owner_rows(organization_id: str, owner: Owner) -> list[UserToken]:
    """`owner.rows(organization_id)`, compiled once per thread: every run of an agent with an MCP
    server reads its owner's connections, and every push of an external worker masks with them (the
    ORM's query building was 2 % of the server's CPU per run). An owner has a row per graph item key
    at most: all are read, and the caller keeps those it asks for."""
    if not owner:
        return []
    if owner.member_id is not None:
        return _MEMBER_ROWS.all(organization_id, owner.member_id)
    return _EXTERNAL_ROWS.all(organization_id, owner.external_id)


_MEMBER_ROWS = KeyedList(UserToken, lambda org, member_id: Owner(member_id=member_id).rows(org), (str, int))
_EXTERNAL_ROWS = KeyedList(
    UserToken, lambda org, external_id: Owner(external_id=external_id).rows(org), (str, str)
)


def tokens_for(
    organization_id: str, owner: Owner, keys: list[str], *, refresh: bool = True
) -> dict[str, str]:
    """The owner's usable tokens for these graph item keys (refreshing those about to expire, or with
    `refresh=False` raising RefreshDue for them)."""
    return {
        row.graph_item_key: row.reveal() for row in usable_rows(organization_id, owner, keys, refresh=refresh)
    }


def renew(organization_id: str, owner: Owner, graph_item_key: str, rejected: str) -> str | None:
    """After a server refused `rejected`: the connection's refreshed token (one refresh for all), or None."""
    from console import oauth

    row = owner.rows(organization_id).filter(graph_item_key=graph_item_key).first() if owner else None
    if row is None or not row.refresh_token_encrypted:
        return None
    row = oauth.refresh(row.pk, rejected_token=rejected)
    return row.reveal() if row is not None and not row.needs_signin else None


def granted_scopes(organization_id: str, owner: Owner, graph_item_key: str) -> str:
    """The scopes the owner's connection to a graph item was granted ("" if none or not connected)."""
    row = owner.rows(organization_id).filter(graph_item_key=graph_item_key).first() if owner else None
    return row.scopes if row is not None else ""


def token_for(organization_id: str, owner: Owner, item: GraphItem) -> str | None:
    """The owner's stored, unexpired token for this graph item, or None."""
    return tokens_for(organization_id, owner, [item.key]).get(item.key)


def match_item(agent: Agent, details: dict[str, Any]) -> GraphItem | None:
    """The agent's MCP graph item a MCPServerDetails dump names: by registry id, else by a unique URL."""
    items = [i for i in agent.graph_items.all() if i.type == "mcp"]
    server_id = details.get("id")
    if server_id:
        for item in items:
            if server_id in (item.mcp_settings.get("id"), item.item_id, item.key):
                return item
    url = (details.get("url") or "").rstrip("/")
    by_url = [i for i in items if url and (i.mcp_settings.get("url") or "").rstrip("/") == url]
    return by_url[0] if len(by_url) == 1 else None


def get_token_response(
    *,
    organization_id: str,
    api_key_id: int | None,
    agent: Agent,
    user_id: str,
    owner: Owner,
    details: dict[str, Any],
    login_url: str | None = None,
) -> dict[str, Any]:
    """Answer the SDK's POST /mcp_auth/{agent_id}/{user_id}/get_token (xpander-wire.md section 6).

    `owner` is whose token the caller may have for `user_id`: NOBODY when it may not, which answers
    exactly as a user with no token does, so a refusal tells nothing about what is stored.
    `login_url` (a sign-in link, or "" while the SDK polls) makes "no token" a `login_required`.
    """
    item = match_item(agent, details)
    server_url = details.get("url") or (item.mcp_settings.get("url") if item else "") or ""
    server_name = details.get("name") or (item.name if item else "") or server_url
    if item is None:
        response = {
            "type": "token_issue",
            "data": {
                "message": "This MCP server is not in the agent's graph",
                "server_url": server_url,
                "server_name": server_name,
            },
        }
    else:
        token = token_for(organization_id, owner, item)
        auth_type = item.mcp_settings.get("auth_type") or "none"
        if token:
            response = {
                "type": "token_ready",
                "data": {"access_token": token, "server_url": server_url, "server_name": server_name},
            }
        elif login_url is not None:
            response = {
                "type": "login_required",
                "data": {"url": login_url, "server_url": server_url, "server_name": server_name},
            }
        elif auth_type == "none":
            response = {
                "type": "not_supported",
                "data": {
                    "message": "This MCP server needs no user token",
                    "server_url": server_url,
                    "server_name": server_name,
                },
            }
        else:
            response = {
                "type": "token_issue",
                "data": {
                    "message": f"No token stored for user {user_id} on {server_name}: send it with a task "
                    "(user_tokens) or paste it in the console",
                    "server_url": server_url,
                    "server_name": server_name,
                },
            }
    McpTokenAccess.objects.create(
        organization_id=organization_id,
        api_key_id=api_key_id,
        agent_id=agent.id,
        user_id=user_id,
        graph_item_key=item.key if item else "",
        # The caller sees "no token" either way; the audit says which it was.
        outcome="refused" if owner == NOBODY and item is not None else response["type"],
    )
    return response


def tokens_of(task: Any) -> list[str]:
    """The vault tokens a task's owner holds for its agent's MCP items (to mask them in what it writes).

    The owner's rows are read first: a task with no owner, or an owner with no connection, costs no
    query for the agent's graph.
    """
    rows = _owner_rows(task.organization_id, owner_of(task))
    if not rows:
        return []
    keys = set(GraphItem.objects.filter(agent_id=task.agent_id, type="mcp").values_list("key", flat=True))
    return [row.reveal() for row in rows if row.graph_item_key in keys]  # expired ones too: still secrets

"""The MCP user-token vault: per-user tokens keyed by graph item id, encrypted at rest.

The runtime reads it when a task brings no token of its own; tasks that bring `user_tokens` for a
user leave them here, so that user's later tasks and external workers (the SDK's get_token route)
can use them. Every token handed out over the API is recorded in McpTokenAccess.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from console import crypto
from console.models import Agent, GraphItem, McpTokenAccess, UserToken


def store(organization_id: str, user_id: str, graph_item_key: str, token: str, source: str = "task") -> None:
    UserToken.objects.update_or_create(
        organization_id=organization_id,
        user_id=user_id,
        graph_item_key=graph_item_key,
        defaults={"token_encrypted": crypto.encrypt(token), "source": source, "expires_at": None},
    )


def hold_task_tokens(agent: Agent, user_id: str, tokens: dict[str, Any]) -> None:
    """Keep the string tokens a task brought for its user, for this agent's MCP graph items."""
    if not user_id or not tokens:
        return
    keys = set(agent.graph_items.filter(type="mcp").values_list("key", flat=True))
    for key, value in tokens.items():
        if key in keys and isinstance(value, str):
            store(agent.organization_id, user_id, key, value, source="task")


def token_for(organization_id: str, user_id: str, item: GraphItem) -> str | None:
    """The stored, unexpired token of `user_id` for this graph item, or None."""
    if not user_id:
        return None
    row = UserToken.objects.filter(
        organization_id=organization_id, user_id=user_id, graph_item_key=item.key
    ).first()
    if row is None or (row.expires_at and row.expires_at <= timezone.now()):
        return None
    return row.reveal()


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
    *, organization_id: str, api_key_id: int | None, agent: Agent, user_id: str, details: dict[str, Any]
) -> dict[str, Any]:
    """Answer the SDK's POST /mcp_auth/{agent_id}/{user_id}/get_token (xpander-wire.md section 6)."""
    if user_id.startswith(f"{agent.id}_"):  # share_user_token_across_other_agents=false form
        user_id = user_id[len(agent.id) + 1 :]
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
        token = token_for(organization_id, user_id, item)
        auth_type = item.mcp_settings.get("auth_type") or "none"
        if token:
            response = {
                "type": "token_ready",
                "data": {"access_token": token, "server_url": server_url, "server_name": server_name},
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
        outcome=response["type"],
    )
    return response


def tokens_of(task) -> list[str]:
    """The vault tokens a task's user holds for its agent's MCP items (to mask them in what it writes)."""
    if not task.vault_user_id:
        return []
    keys = list(task.agent.graph_items.filter(type="mcp").values_list("key", flat=True))
    rows = UserToken.objects.filter(
        organization_id=task.organization_id, user_id=task.vault_user_id, graph_item_key__in=keys
    )
    return [row.reveal() for row in rows]

"""The MCP user-token vault: per-user tokens keyed by graph item id, encrypted at rest.

The runtime reads it when a task brings no token of its own; tasks that bring `user_tokens` for a
user leave them here, so that user's later tasks and external workers can use them.
"""

from __future__ import annotations

from django.utils import timezone

from console import crypto
from console.models import GraphItem, UserToken


def store(organization_id: str, user_id: str, graph_item_key: str, token: str, source: str = "task") -> None:
    UserToken.objects.update_or_create(
        organization_id=organization_id,
        user_id=user_id,
        graph_item_key=graph_item_key,
        defaults={"token_encrypted": crypto.encrypt(token), "source": source},
    )


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

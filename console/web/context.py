"""Template context for every console page: the member, their organizations for the switcher."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from console.models import Membership


def console(request: HttpRequest) -> dict[str, Any]:
    member = getattr(request, "member", None)
    if member is None:
        return {}
    return {
        "member": member,
        "memberships": lambda: list(
            Membership.objects.select_related("organization")
            .filter(user_id=member.user_id)
            .order_by("organization__name")
        ),
        "can_write": request.actor.can("member"),
        "can_admin": request.actor.can("admin"),
    }

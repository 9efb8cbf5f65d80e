"""Who is signed in: the console's session, its chosen organization, and the Actor it acts as.

Pages and sockets both call `actor_for_session`; the role always comes from the membership of the
organization the session chose, read fresh from the database on every call (so a deactivated user
or a removed membership stops working at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest

from console.access import actor_for_membership
from console.errors import Unauthorized
from console.models import Membership
from tasks_app.actions import Actor

SESSION_ORG = "console_organization_id"


@dataclass(frozen=True)
class Signed:
    """The signed-in member: their membership in the chosen organization and the Actor for it."""

    membership: Membership
    actor: Actor


def _user_and_session(request_or_scope: HttpRequest | dict[str, Any]) -> tuple[Any, Any]:
    if isinstance(request_or_scope, dict):
        return request_or_scope.get("user") or AnonymousUser(), request_or_scope.get("session")
    return request_or_scope.user, request_or_scope.session


def signed_in(request_or_scope: HttpRequest | dict[str, Any]) -> Signed:
    """The membership and Actor of a request's or a websocket scope's session, or Unauthorized."""
    user, session = _user_and_session(request_or_scope)
    if user is None or not user.is_authenticated:
        raise Unauthorized("Sign in first")
    if not user.is_active:
        raise Unauthorized("This account is deactivated")
    chosen = session.get(SESSION_ORG) if session is not None else None
    memberships = Membership.objects.select_related("organization", "user").filter(user_id=user.pk)
    if chosen:
        member = memberships.filter(organization_id=chosen).first()
        if member is None:  # removed from the organization this session works in
            raise Unauthorized("You are no longer a member of that organization")
    else:
        member = memberships.order_by("created_at", "pk").first()
        if member is None:
            raise Unauthorized("This account is not a member of any organization")
        if session is not None:
            session[SESSION_ORG] = member.organization_id
    if not member.user.is_active:  # read fresh: a socket's scope keeps the user it connected with
        raise Unauthorized("This account is deactivated")
    if member.deactivated_at is not None:
        raise Unauthorized(f"Your membership of {member.organization.name} is deactivated")
    return Signed(member, actor_for_membership(member))


def actor_for_session(request_or_scope: HttpRequest | dict[str, Any]) -> Actor:
    """The Actor a console page or socket acts as (see `signed_in`)."""
    return signed_in(request_or_scope).actor


def choose_organization(request: HttpRequest, organization_id: str) -> Membership | None:
    """Switch the session to another organization of the user; None when they are not a member."""
    member = (
        Membership.objects.select_related("organization")
        .filter(user_id=request.user.pk, organization_id=organization_id)
        .first()
    )
    if member is not None:
        request.session[SESSION_ORG] = member.organization_id
    return member


def task_user(member: Membership) -> dict[str, str]:
    """The `input.user` of a task created in the console: the member's one vault identity and email,
    so the runtime and external workers' get_token calls use the member's own tokens."""
    user: AbstractBaseUser = member.user
    return {"id": member.vault_id, "email": user.email}

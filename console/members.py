"""Members: invitations, roles, deactivation, one's own profile; each change on the audit log.

Rules: owners and admins manage members; nobody grants a role above their own or changes someone
above them; the organization always keeps an active owner. Deactivation is per organization (the
account may belong to other organizations): the member's sessions and keys stop at once, because
every request and stream reads the membership row.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from console import audit
from console.access import Actor
from console.errors import Conflict, Forbidden, Invalid, NotFound
from console.ids import row_id
from console.models import ROLE_RANK, Invitation, Membership, Role, hash_api_key

INVITE_PREFIX = "inv_"
log = logging.getLogger(__name__)


def invite_hours() -> int:
    return int(getattr(settings, "CONSOLE_INVITE_HOURS", 72))


@dataclass(frozen=True)
class NewInvitation:
    """An invitation and its raw token, shown once to the inviter (only its hash is stored)."""

    invitation: Invitation
    token: str

    @property
    def path(self) -> str:
        return f"/invite/{self.token}/"


def _rank(role: str) -> int:
    return ROLE_RANK[Role(role)]


def _require_manager(actor: Actor) -> None:
    if not actor.can(Role.ADMIN):
        raise Forbidden(f"Managing members needs the admin role; yours is {actor.role}")


def _grantable(actor: Actor, role: str) -> None:
    if role not in Role.values:
        raise Invalid("role", f"one of {', '.join(Role.values)}")
    if _rank(role) > _rank(actor.role):
        raise Invalid("role", f"you cannot grant more than your own role ({actor.role})")


def members(actor: Actor) -> QuerySet[Membership]:
    """The organization's members, owners first."""
    return (
        Membership.objects.filter(organization_id=actor.organization_id)
        .select_related("user")
        .order_by("deactivated_at", "user__email")
    )


def invitations(actor: Actor) -> QuerySet[Invitation]:
    """Invitations not yet used, revoked or expired."""
    _require_manager(actor)
    return Invitation.objects.filter(
        organization_id=actor.organization_id,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).order_by("-created_at")


def invite_member(actor: Actor, email: str, role: str, *, base_url: str = "") -> NewInvitation:
    """An invitation link (single use, expiring); mailed too when the operator configured email."""
    _require_manager(actor)
    _grantable(actor, role)
    email = email.strip().lower()
    if Membership.objects.filter(organization_id=actor.organization_id, user__email__iexact=email).exists():
        raise Invalid("email", f"{email} is already a member")
    token = INVITE_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            organization_id=actor.organization_id,
            email=email,
            role=role,
            token_hash=hash_api_key(token),
            invited_by_id=actor.member_id,
            expires_at=timezone.now() + timedelta(hours=invite_hours()),
        )
        audit.record(
            actor,
            "member.invited",
            object_type="invitation",
            object_id=invitation.pk,
            object_label=email,
            changes={"role": {"to": role}},
        )
    new = NewInvitation(invitation, token)
    if mail_configured():
        transaction.on_commit(lambda: _mail(new, base_url))
    return new


def mail_configured() -> bool:
    """Whether the operator set up Django's email (MAILERS, or the older EMAIL_* settings)."""
    return hasattr(settings, "MAILERS") or any(
        settings.is_overridden(name) for name in ("EMAIL_HOST", "EMAIL_BACKEND")
    )


def _mail(new: NewInvitation, base_url: str) -> None:
    invitation = new.invitation
    try:
        send_mail(
            f"Join {invitation.organization.name} on the Agent Task Console",
            f"You were invited as {invitation.role}. Set your password here (valid for {invite_hours()} "
            f"hours, once): {base_url}{new.path}",
            None,
            [invitation.email],
        )
    except OSError as exc:  # the link is on the inviter's page too; the log never shows the token
        log.warning("invitation %s: mail not sent: %s", invitation.pk, type(exc).__name__)


def find_invitation(token: str) -> Invitation:
    """The usable invitation a link names, or NotFound (unknown, used, revoked or expired alike)."""
    invitation = (
        Invitation.objects.select_related("organization").filter(token_hash=hash_api_key(token or "")).first()
    )
    if invitation is None or not invitation.usable:
        raise NotFound("This invitation link is unknown, used or expired; ask for a new one")
    return invitation


def accept_invitation(token: str, password: str, *, existing: AbstractBaseUser | None = None) -> Membership:
    """Use an invitation once: a new account with `password`, or the existing account it names."""
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update().filter(token_hash=hash_api_key(token or "")).first()
        )
        if invitation is None or not invitation.usable:
            raise NotFound("This invitation link is unknown, used or expired; ask for a new one")
        User = get_user_model()
        user = User.objects.filter(email__iexact=invitation.email).first()
        if user is None:
            user = User.objects.create_user(
                username=invitation.email, email=invitation.email, password=password
            )
        elif existing is None or existing.pk != user.pk:  # the link alone never adds an existing account
            raise Forbidden(
                f"An account for {invitation.email} exists: sign in as it, then open the link again"
            )
        if Membership.objects.filter(organization_id=invitation.organization_id, user=user).exists():
            raise Conflict("You are already a member of this organization")
        member = Membership.objects.create(
            organization_id=invitation.organization_id, user=user, role=invitation.role
        )
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
        audit.record(
            None,
            "member.joined",
            organization_id=invitation.organization_id,
            user_id=user.pk,
            label=user.email,
            object_type="member",
            object_id=member.pk,
            object_label=user.email,
            changes={"role": {"to": invitation.role}},
        )
    return member


def revoke_invitation(actor: Actor, invitation_id: int | str) -> None:
    _require_manager(actor)
    with transaction.atomic():
        invitation = _invitation(actor, invitation_id)
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit.record(
            actor, "member.invitation_revoked", object_type="invitation", object_id=invitation.pk,
            object_label=invitation.email,
        )  # fmt: skip


def _invitation(actor: Actor, invitation_id: int | str) -> Invitation:
    try:
        return Invitation.objects.select_for_update().get(
            pk=row_id(invitation_id), organization_id=actor.organization_id, accepted_at__isnull=True
        )
    except (Invitation.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Invitation {invitation_id} not found") from None


def _member(actor: Actor, member_id: int | str) -> Membership:
    try:
        return (
            Membership.objects.select_for_update(of=("self",))
            .select_related("user")
            .get(pk=row_id(member_id), organization_id=actor.organization_id)
        )
    except (Membership.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Member {member_id} not found") from None


def _may_manage(actor: Actor, member: Membership) -> None:
    if _rank(member.role) > _rank(actor.role):
        raise Forbidden(f"{member.user.email} is {member.role}; your role ({actor.role}) cannot change them")


def _keep_an_owner(member: Membership, what: str) -> None:
    """Refuse to leave the organization without an active owner (rows locked: no race)."""
    if member.role != Role.OWNER or member.deactivated_at is not None:
        return
    owners = list(
        Membership.objects.select_for_update()
        .filter(organization_id=member.organization_id, role=Role.OWNER, deactivated_at__isnull=True)
        .values_list("pk", flat=True)
    )
    if owners == [member.pk]:
        raise Conflict(f"{member.user.email} is the last owner; make someone else owner before you {what}")


def change_role(actor: Actor, member_id: int | str, role: str) -> Membership:
    _require_manager(actor)
    _grantable(actor, role)
    with transaction.atomic():
        member = _member(actor, member_id)
        _may_manage(actor, member)
        if member.role == role:
            return member
        if role != Role.OWNER:
            _keep_an_owner(member, "demote them")
        old = member.role
        member.role = role
        member.save(update_fields=["role"])
        audit.record(
            actor, "member.role_changed", object_type="member", object_id=member.pk,
            object_label=member.user.email, changes={"role": {"from": old, "to": role}},
        )  # fmt: skip
    return member


def set_active(actor: Actor, member_id: int | str, active: bool) -> Membership:
    """Deactivate (sessions and keys stop at once) or reactivate a member of this organization."""
    _require_manager(actor)
    with transaction.atomic():
        member = _member(actor, member_id)
        _may_manage(actor, member)
        if (member.deactivated_at is None) == active:
            raise Conflict(f"{member.user.email} is already {'active' if active else 'deactivated'}")
        if not active:
            _keep_an_owner(member, "deactivate them")
        member.deactivated_at = None if active else timezone.now()
        member.save(update_fields=["deactivated_at"])
        audit.record(
            actor, "member.reactivated" if active else "member.deactivated", object_type="member",
            object_id=member.pk, object_label=member.user.email,
        )  # fmt: skip
    return member


def update_profile(actor: Actor, *, first_name: str, last_name: str) -> None:
    """The caller's own name (the email is the sign-in name and stays)."""
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=actor.user_id)
        before = {"first_name": user.first_name, "last_name": user.last_name}
        after = {"first_name": first_name.strip(), "last_name": last_name.strip()}
        if before == after:
            return
        User.objects.filter(pk=user.pk).update(**after)
        audit.record(
            actor, "member.profile_changed", object_type="member", object_id=actor.member_id,
            object_label=user.email, changes=audit.diff(before, after),
        )  # fmt: skip

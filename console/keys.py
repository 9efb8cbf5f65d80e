"""API keys: create (the raw key returned once), list, revoke; each change on the audit log.

A key acts as the member who created it, with the lower of the key's role and that member's role.
Revoking forgets the key's cached caller in this process at once (console.access: every save of a
key, membership or user does, and `revoke_key` says so itself); another web process may accept it
for at most API_KEY_CACHE_SECONDS more. Open streams re-read the key's row (key_is_valid) and a new
stream reads it before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from console import audit
from console.access import Actor, forget_api_keys
from console.errors import Conflict, Forbidden, Invalid, NotFound
from console.ids import row_id
from console.models import ROLE_RANK, ApiKey, Membership, Role

NAME_MAX = 200


@dataclass(frozen=True)
class NewKey:
    """A key just created and its raw secret, to show once and never again."""

    key: ApiKey
    raw: str


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise Invalid("name", "give the key a name, e.g. what will use it")
    if len(name) > NAME_MAX:
        raise Invalid("name", f"at most {NAME_MAX} characters (got {len(name)})")
    return name


def create_key(actor: Actor, name: str, role: str = "") -> NewKey:
    """A key of the caller's membership; `role` (at most the caller's) empty means "as me"."""
    if actor.member_id is None:
        raise Forbidden("Only a member can create API keys")
    name = _check_name(name)
    if role:
        if role not in Role.values:
            raise Invalid("role", f"one of {', '.join(Role.values)}")
        if not actor.can(Role.ADMIN):
            raise Forbidden(f"Keys with a chosen role need the admin role; yours is {actor.role}")
        if ROLE_RANK[Role(role)] > ROLE_RANK[Role(actor.role)]:
            raise Invalid("role", f"a key cannot have more than your own role ({actor.role})")

    with transaction.atomic():
        member = Membership.objects.get(pk=actor.member_id, organization_id=actor.organization_id)
        key, raw = ApiKey.issue(member, name=name, role=role)
        audit.record(
            actor,
            "key.created",
            object_type="key",
            object_id=key.pk,
            object_label=f"{name} ({key.display})",
            changes={"name": {"to": name}, "role": {"to": role or "as its member"}},
        )
    return NewKey(key, raw)


def organization_keys(actor: Actor) -> QuerySet[ApiKey]:
    """Every key of the organization (admins), newest first."""
    if not actor.can(Role.ADMIN):
        raise Forbidden(f"Listing the organization's keys needs the admin role; yours is {actor.role}")
    return (
        ApiKey.objects.filter(membership__organization_id=actor.organization_id)
        .select_related("membership__user")
        .order_by("-created_at", "-id")
    )


def personal_keys(actor: Actor) -> QuerySet[ApiKey]:
    """The caller's own keys, newest first."""
    return (
        ApiKey.objects.filter(
            membership_id=actor.member_id, membership__organization_id=actor.organization_id
        )
        .select_related("membership__user")
        .order_by("-created_at", "-id")
    )


def revoke_key(actor: Actor, key_id: int | str) -> ApiKey:
    """Revoke at once: admins any key of the organization, others their own (404 for the rest)."""
    with transaction.atomic():
        rows = ApiKey.objects.select_for_update().filter(membership__organization_id=actor.organization_id)
        if not actor.can(Role.ADMIN):
            rows = rows.filter(membership_id=actor.member_id)
        try:
            key = rows.select_related("membership__user").get(pk=row_id(key_id))
        except (ApiKey.DoesNotExist, ValueError, TypeError):
            raise NotFound(f"API key {key_id} not found") from None
        if ROLE_RANK[Role(key.membership.role)] > ROLE_RANK[Role(actor.role)]:
            raise Forbidden(
                f"This key belongs to an {key.membership.role}; your role ({actor.role}) cannot revoke it"
            )
        if key.revoked_at is not None:
            raise Conflict(f"API key {key.name} ({key.display}) is already revoked")
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        forget_api_keys()  # the save's signal does it too; a revocation must not depend on that
        audit.record(
            actor,
            "key.revoked",
            object_type="key",
            object_id=key.pk,
            object_label=f"{key.name} ({key.display})",
        )
    return key


def key_json(key: ApiKey) -> dict:
    """A key as listed: never its secret, only its name, prefix and last four characters."""
    return {
        "id": key.pk,
        "name": key.name,
        "prefix": key.prefix,
        "last4": key.last4,
        "role": key.role or None,
        "effective_role": key.effective_role,
        "created_by": key.membership.user.email,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }

"""Who is calling: the Actor (organization, role, member, key) made from an API key or from a signed-in
membership by functions side by side, and the role checks every entry point applies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone

from console import vault
from console.errors import NotFound, Unauthorized
from console.models import ROLE_RANK, ApiKey, Membership, Role, hash_api_key


@dataclass(frozen=True)
class Actor:
    """Who is calling: an API key or a signed-in member, always inside one organization."""

    organization_id: str
    role: str
    user_id: int | None = None
    api_key_id: int | None = None
    label: str = ""
    user_email: str = ""
    member_id: int | None = None  # the Membership acting (None for the runtime)
    vault_id: str = ""  # that member's vault identity

    @property
    def is_service_key(self) -> bool:
        """An admin's or owner's API key: the only caller that may name end users in input.user."""
        return self.api_key_id is not None and self.role in (Role.ADMIN, Role.OWNER)

    @property
    def as_member(self) -> vault.Owner:
        return vault.Owner(member_id=self.member_id) if self.member_id is not None else vault.NOBODY

    def may_use(self, owner: vault.Owner) -> bool:
        """Whether this caller may read `owner`'s vault tokens: a service key any, a member only its own."""
        if self.role == SYSTEM or self.is_service_key:
            return bool(owner)
        return owner.is_member and owner.member_id == self.member_id

    def can(self, role: str) -> bool:
        if self.role == SYSTEM:
            return True
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


SYSTEM = "system"  # the runtime acts on tasks it already holds; it is not an organization member

LAST_USED_RESOLUTION = timedelta(seconds=60)  # record last use without a write on every request


def actor_for_key(raw: str | None) -> Actor:
    if not raw:
        raise Unauthorized("Missing API key: send it in the x-api-key header")
    try:
        key = ApiKey.objects.select_related("membership__user").get(key_hash=hash_api_key(raw.strip()))
    except ApiKey.DoesNotExist:
        raise Unauthorized("Invalid API key") from None
    if key.revoked_at is not None:
        raise Unauthorized("This API key was revoked")
    if not key.membership.user.is_active or key.membership.deactivated_at is not None:
        raise Unauthorized("The member this API key belongs to is deactivated")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    member = key.membership
    return Actor(
        organization_id=member.organization_id,
        role=key.effective_role,
        user_id=member.user_id,
        api_key_id=key.pk,
        label=key.display,
        user_email=member.user.email,
        member_id=member.pk,
        vault_id=member.vault_id,
    )


def actor_for_membership(member: Membership) -> Actor:
    """A signed-in console member: their role, never a service key, so their tasks run as them."""
    return Actor(
        organization_id=member.organization_id,
        role=member.role,
        user_id=member.user_id,
        label=member.user.email,
        user_email=member.user.email,
        member_id=member.pk,
        vault_id=member.vault_id,
    )


def key_is_valid(api_key_id: int) -> bool:
    """Whether a key that authenticated earlier may still be used: long streams re-check it."""
    return ApiKey.objects.filter(
        pk=api_key_id,
        revoked_at__isnull=True,
        membership__user__is_active=True,
        membership__deactivated_at__isnull=True,
    ).exists()


def actor_for_request(request: HttpRequest) -> Actor:
    """Authenticate by x-api-key and check the URL's organization segment, if any."""
    actor = actor_for_key(request.headers.get("x-api-key"))
    url_org = getattr(request, "url_organization_id", None)
    if url_org is not None and url_org != actor.organization_id:
        raise NotFound(f"Organization {url_org} not found")
    return actor

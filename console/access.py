"""Who is calling: the Actor (organization, role, member, key) made from an API key or from a signed-in
membership by functions side by side, and the role checks every entry point applies.

An API key's Actor is kept for API_KEY_CACHE_SECONDS (a few seconds): reading the key, its member
and user on every request was a fifth of a cheap request's CPU. Any save or delete of a key, a
membership or a user in this process (revoking, a role change, deactivating) forgets every cached
Actor at once, and again when its transaction commits; another process notices within the expiry.
Only successful lookups are cached: a revoked or unknown key is read again on every request.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest
from django.utils import timezone

from console import vault
from console.errors import NotFound, Unauthorized
from console.models import ROLE_RANK, ApiKey, Membership, Role, hash_api_key, key_display, key_role
from console.prepared import KeyedValues

log = logging.getLogger(__name__)


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


class _ActorCache:
    """key hash -> (expiry, Actor), process-wide; a generation number keeps a lookup that raced an
    invalidation (it read the row before the change committed) from being stored."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Actor]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key_hash: str) -> Actor | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            with self._lock:
                self._entries.pop(key_hash, None)
            return None
        return entry[1]

    def put(self, key_hash: str, actor: Actor, generation: int, seconds: float) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + seconds, actor)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


_actors = _ActorCache()


def forget_api_keys() -> None:
    """Drop every cached Actor now and again when the current transaction commits (if any).

    Now: this process's next request reads the row. At commit: a request that read the old row
    before the commit cannot keep it (its generation is stale by then).
    """
    _actors.clear()
    transaction.on_commit(_actors.clear)


def _forget_on_change(sender: Any, **kwargs: Any) -> None:
    forget_api_keys()


for _model in (ApiKey, Membership, get_user_model()):
    post_save.connect(_forget_on_change, sender=_model, dispatch_uid=f"access.forget.save.{_model.__name__}")
    post_delete.connect(_forget_on_change, sender=_model, dispatch_uid=f"access.forget.del.{_model.__name__}")


def actor_for_key(raw: str | None, *, cached: bool = True) -> Actor:
    """The Actor of an API key; `cached=False` reads the key's row even if a cached Actor is fresh."""
    if not raw:
        raise Unauthorized("Missing API key: send it in the x-api-key header")
    key_hash = hash_api_key(raw.strip())
    seconds = settings.API_KEY_CACHE_SECONDS
    if cached and seconds > 0:
        actor = _actors.get(key_hash)
        if actor is not None:
            return actor
    generation = _actors.generation
    actor = _actor_from_row(key_hash)
    if seconds > 0:
        _actors.put(key_hash, actor, generation, seconds)
    return actor


def recently_authenticated(raw: str | None) -> Actor | None:
    """The Actor of an API key that authenticated within API_KEY_CACHE_SECONDS, from memory only
    (no database read; None if it did not, or the cache is off). Not an authorization: what lasts
    (an event stream) still reads its key; this only says the caller is worth preparing for."""
    if not raw or settings.API_KEY_CACHE_SECONDS <= 0:
        return None
    return _actors.get(hash_api_key(raw.strip()))


# What an API key's authentication reads: the key, its member and the member's user, in one row
# (inner joins: neither foreign key may be null; a null would read as an inactive user and refuse).
# Compiled once per thread (console/prepared.py): every event stream reads it uncached (~0.4 ms of
# CPU a read through the ORM's select_related here, most of it building the query).
_KEY_ROW = KeyedValues(
    ApiKey,
    lambda key_hash: ApiKey.objects.filter(key_hash=key_hash).values_list(
        "pk",
        "revoked_at",
        "last_used_at",
        "role",
        "prefix",
        "last4",
        "membership_id",
        "membership__organization_id",
        "membership__role",
        "membership__user_id",
        "membership__vault_id",
        "membership__deactivated_at",
        "membership__user__is_active",
        "membership__user__email",
    ),
)


def _actor_from_row(key_hash: str) -> Actor:
    try:
        (key_id, revoked_at, last_used_at, role, prefix, last4, member_id, organization_id, member_role,
         user_id, vault_id, deactivated_at, user_active, email) = _KEY_ROW.get(key_hash)  # fmt: skip
    except ApiKey.DoesNotExist:
        raise Unauthorized("Invalid API key") from None
    if revoked_at is not None:
        raise Unauthorized("This API key was revoked")
    if not user_active or deactivated_at is not None:
        raise Unauthorized("The member this API key belongs to is deactivated")
    now = timezone.now()
    if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
        # Bookkeeping: a write transaction, so it queues for the write lock like every other
        # (console/sqlite), and a database too busy for it does not fail the request it serves.
        try:
            with transaction.atomic():
                ApiKey.objects.filter(pk=key_id).update(last_used_at=now)
        except OperationalError as exc:
            log.warning("could not record that API key %s was used: %s", key_id, type(exc).__name__)
    return Actor(
        organization_id=organization_id,
        role=key_role(role, member_role),
        user_id=user_id,
        api_key_id=key_id,
        label=key_display(prefix, last4),
        user_email=email,
        member_id=member_id,
        vault_id=vault_id,
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
    return api_key_id in valid_keys([api_key_id])


def valid_keys(api_key_ids: list[int]) -> set[int]:
    """Which of these keys may still be used (one query for the keys of many streams)."""
    return set(
        ApiKey.objects.filter(
            pk__in=[i for i in api_key_ids if i is not None],
            revoked_at__isnull=True,
            membership__user__is_active=True,
            membership__deactivated_at__isnull=True,
        ).values_list("pk", flat=True)
    )


def actor_for_request(request: HttpRequest, *, cached: bool = True) -> Actor:
    """Authenticate by x-api-key and check the URL's organization segment, if any.

    `cached=False` for what lasts (an event stream): its key is read, as it was revoked or not, now.
    """
    actor = actor_for_key(request.headers.get("x-api-key"), cached=cached)
    url_org = getattr(request, "url_organization_id", None)
    if url_org is not None and url_org != actor.organization_id:
        raise NotFound(f"Organization {url_org} not found")
    return actor

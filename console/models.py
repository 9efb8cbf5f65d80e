"""Organizations, members, API keys and agent configuration.

Agents and their graph items are the configuration tasks run against; graph item keys are stable
strings because user MCP tokens are stored and sent under them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from console import crypto, memo


def new_id() -> str:
    return str(uuid.uuid4())


class Role(models.TextChoices):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


# What each role may do; checked by console.access.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Organization(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Days finished tasks are kept; None: settings.TASK_RETENTION_DAYS; 0: kept forever.
    retention_days = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


def new_vault_id() -> str:
    return "mbr_" + uuid.uuid4().hex


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    # The member's one vault identity: their tasks' input.user.id and get_token's {user_id}.
    vault_id = models.CharField(max_length=64, unique=True, default=new_vault_id, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    # Deactivated in this organization only (the account may belong to others): no page, no key.
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="uniq_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    def can(self, role: str) -> bool:
        """True when this member's role is at least `role`."""
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


API_KEY_PREFIX = "atc_"


def hash_api_key(raw: str) -> str:
    # Keys carry 256 bits of entropy, so a fast unsalted hash is enough and keeps lookups indexed.
    return hashlib.sha256(raw.encode()).hexdigest()


def key_role(role: str, member_role: str) -> str:
    """What a key with `role` ("" for its member's) may do: the lower of it and its member's role."""
    if not role:
        return Role(member_role).value
    return min(Role(member_role), Role(role), key=ROLE_RANK.__getitem__).value


def key_display(prefix: str, last4: str) -> str:
    """How a key is shown: its prefix and last four characters, never the rest."""
    return f"{prefix}…{last4}"


class ApiKey(models.Model):
    """An API key acts as the member who created it, with that member's role."""

    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, default="default")
    prefix = models.CharField(max_length=16)
    last4 = models.CharField(max_length=4)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A key may act with less than its member's role (a viewer key of an admin); empty: the member's.
    role = models.CharField(max_length=16, choices=Role.choices, blank=True, default="")

    def __str__(self) -> str:
        return self.display

    @property
    def effective_role(self) -> str:
        """The lower of the key's role and its member's current role."""
        return key_role(self.role, self.membership.role)

    @property
    def organization(self) -> Organization:
        return self.membership.organization

    @property
    def display(self) -> str:
        return key_display(self.prefix, self.last4)

    @classmethod
    def issue(cls, membership: Membership, name: str = "default", role: str = "") -> tuple[ApiKey, str]:
        """Create a key and return it with the raw secret, which is never stored."""
        raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(
            membership=membership,
            name=name,
            role=role,
            prefix=raw[: len(API_KEY_PREFIX) + 4],
            last4=raw[-4:],
            key_hash=hash_api_key(raw),
        )
        return key, raw

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class Invitation(models.Model):
    """A single-use, expiring link that makes someone a member: only the token's hash is stored."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(Membership, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.organization} ({self.role})"

    @property
    def usable(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class Framework(models.TextChoices):
    BUILTIN = "builtin"  # the server runs it
    EXTERNAL = "external"  # the user's own code runs it through the API


class ModelProvider(models.TextChoices):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai_compatible"
    OLLAMA = "ollama"


class DecryptsOnce:
    """An encrypted column's plaintext, decrypted once per process while its ciphertext is unchanged.

    Why: every agent run reads its agent's and graph items' rows afresh, then the same secrets from
    several places (the masking list, the model client, the endpoint check, the MCP credentials):
    each read was a Fernet decryption (an HMAC and an AES pass), 3 % of the server's CPU per run.
    Kept by ciphertext, in this process's memory only: a Fernet token is unique to one encryption,
    so a changed secret (or a key rotation, which encrypts again) is a new entry, decrypted anew.
    Nothing is written anywhere; the process holds FIELD_ENCRYPTION_KEYS themselves, so a reader of
    its memory finds nothing here it could not decrypt. At most PLAINTEXTS_KEPT, the oldest dropped.
    """

    def decrypted(self, field: str) -> str:
        token = getattr(self, field)
        plain = _PLAINTEXTS.get(token)
        if plain is None:
            plain = crypto.decrypt(token)
            memo.remember(_PLAINTEXTS, token, plain, PLAINTEXTS_KEPT)
        return plain


_PLAINTEXTS: dict[str, str] = {}  # a stored secret's ciphertext -> its plaintext (DecryptsOnce)
PLAINTEXTS_KEPT = 1024


class Agent(DecryptsOnce, models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    unique_name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    instructions = models.TextField(blank=True, default="")
    framework = models.CharField(max_length=16, choices=Framework.choices, default=Framework.BUILTIN)
    model_provider = models.CharField(max_length=32, default=ModelProvider.OPENAI)
    model_name = models.CharField(max_length=200, default="gpt-4o-mini")
    model_base_url = models.CharField(max_length=500, blank=True, default="")
    model_api_key_encrypted = models.TextField(blank=True, default="")
    output_format = models.CharField(max_length=16, blank=True, default="")
    tool_call_limit = models.PositiveIntegerField(null=True, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "unique_name"], name="uniq_agent_unique_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_model_api_key(self) -> bool:
        return bool(self.model_api_key_encrypted)

    def set_model_api_key(self, value: str | None) -> None:
        self.model_api_key_encrypted = crypto.encrypt(value) if value else ""

    def get_model_api_key(self) -> str | None:
        return self.decrypted("model_api_key_encrypted") if self.model_api_key_encrypted else None


class GraphItemType(models.TextChoices):
    MCP = "mcp"
    AGENT = "agent"


class GraphItem(DecryptsOnce, models.Model):
    """One node of an agent's graph: an MCP server or a sub-agent."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="graph_items")
    key = models.CharField(max_length=200)  # the wire `id`: user tokens are keyed by it
    type = models.CharField(max_length=16, choices=GraphItemType.choices)
    item_id = models.CharField(max_length=200, blank=True, default="")
    name = models.CharField(max_length=200, blank=True, default="")
    settings = models.JSONField(default=dict, blank=True)
    # Secrets from mcp_settings (api_key, client_secret, headers), encrypted and never echoed.
    secret_settings_encrypted = models.TextField(blank=True, default="")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="uniq_graph_item_key")]

    def __str__(self) -> str:
        return f"{self.key} ({self.type})"

    @property
    def mcp_settings(self) -> dict:
        return dict(self.settings.get("mcp_settings") or {})

    def secret_settings(self) -> dict:
        # decrypted once, parsed on every call: callers get a dict of their own to change
        return (
            json.loads(self.decrypted("secret_settings_encrypted")) if self.secret_settings_encrypted else {}
        )


class UserToken(models.Model):
    """A token for one MCP graph item, encrypted: the vault's rows.

    Its owner is exactly one of a member of the organization or an external end user (an
    `input.user.id` named by a service key), so equal id strings never share a row. Keyed with the
    graph item id, the key `user_tokens` uses. Sources: given with a task, pasted in the console, or
    an OAuth sign-in.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="user_tokens")
    member = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.CASCADE, related_name="vault_tokens"
    )
    external_user_id = models.CharField(max_length=200, blank=True, default="")
    graph_item_key = models.CharField(max_length=200)
    token_encrypted = models.TextField()
    source = models.CharField(max_length=16, default="task")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # OAuth connection state (issue 15): refreshed under a row lock by console.oauth.
    refresh_token_encrypted = models.TextField(blank=True, default="")
    token_type = models.CharField(max_length=32, blank=True, default="Bearer")
    scopes = models.CharField(max_length=1000, blank=True, default="")
    issuer = models.CharField(max_length=500, blank=True, default="")
    resource = models.CharField(max_length=500, blank=True, default="")
    client_id = models.CharField(max_length=500, blank=True, default="")
    last4 = models.CharField(max_length=4, blank=True, default="")
    last_used_at = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_error = models.CharField(max_length=500, blank=True, default="")
    refresh_failures = models.PositiveIntegerField(default=0)
    needs_signin = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(member__isnull=False, external_user_id="")
                    | (models.Q(member__isnull=True) & ~models.Q(external_user_id=""))
                ),
                name="user_token_one_owner",
            ),
            models.UniqueConstraint(
                fields=["organization", "member", "graph_item_key"],
                condition=models.Q(member__isnull=False),
                name="uniq_member_token_per_item",
            ),
            models.UniqueConstraint(
                fields=["organization", "external_user_id", "graph_item_key"],
                condition=models.Q(member__isnull=True),
                name="uniq_external_token_per_item",
            ),
        ]

    def __str__(self) -> str:
        owner = f"member {self.member_id}" if self.member_id else f"end user {self.external_user_id}"
        return f"token of {owner} for {self.graph_item_key}"

    def reveal(self) -> str:
        return crypto.decrypt(self.token_encrypted)

    def reveal_refresh(self) -> str:
        return crypto.decrypt(self.refresh_token_encrypted) if self.refresh_token_encrypted else ""


class McpTokenAccess(models.Model):
    """Audit of every token handed out through the SDK's get_token route (never the token itself)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="token_accesses")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL)
    agent_id = models.CharField(max_length=64)
    user_id = models.CharField(max_length=200)
    graph_item_key = models.CharField(max_length=200, blank=True, default="")
    outcome = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.outcome} for {self.user_id} on {self.graph_item_key}"


class AuditQuerySet(models.QuerySet):
    """The audit log is append-only: no bulk edit or delete through the product."""

    def update(self, **kwargs: object) -> int:
        # Deleting a user or key sets its references to NULL (the label stays); nothing else changes.
        if set(kwargs) <= {"actor_user", "actor_key"} and not any(kwargs.values()):
            return super().update(**kwargs)
        raise PermissionError("Audit entries cannot be edited")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit entries cannot be deleted")


class AuditEvent(models.Model):
    """Who changed what, when and from where; written by console.audit in the change's transaction."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_events"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=254, blank=True, default="")  # kept when the user goes
    address = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32, blank=True, default="")
    object_id = models.CharField(max_length=200, blank=True, default="")
    object_label = models.CharField(max_length=200, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)  # {field: {"from": old, "to": new}}

    objects = AuditQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["organization", "created_at", "id"], name="audit_org_time")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_label}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise PermissionError("Audit entries cannot be edited")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit entries cannot be deleted")


from console.oauth_models import OAuthClient, OAuthFlow  # noqa: E402, F401  (issue 15's models)

"""Agent configuration: validation and the writes behind /api/v1/agents.

The body has the shape GET /api/agents/{id} returns, with `framework` builtin|external.
Secrets (the model API key, MCP api keys, client secrets, headers) are encrypted and never echoed.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from console import audit, crypto, egress
from console.access import Actor
from console.errors import Conflict, Forbidden, Invalid, NotFound
from console.masking import is_secret_key
from console.models import Agent, GraphItem, Role

SECRET_MCP_KEYS = ("api_key", "client_secret", "headers")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_UNIQUE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,199}$")


class McpSettingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    id: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    type: Literal["remote"] = "remote"
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    auth_type: Literal["api_key", "oauth2", "custom_headers", "sso_user", "none"] = "none"
    api_key: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    allowed_tools: list[str] = Field(default_factory=list)
    additional_scopes: list[str] = Field(default_factory=list)
    share_user_token_across_other_agents: StrictBool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _outbound_url(value)


class GraphSettingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    mcp_settings: McpSettingsIn | None = None


class GraphItemIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, min_length=1, max_length=200)
    type: Literal["mcp", "agent"]
    name: str | None = Field(default=None, max_length=200)
    item_id: str | None = Field(default=None, max_length=200)
    settings: GraphSettingsIn = Field(default_factory=GraphSettingsIn)


class InstructionsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    general: str = ""
    role: list[str] = Field(default_factory=list)
    goal: list[str] = Field(default_factory=list)


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=200)
    unique_name: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=5000)
    instructions: str | InstructionsIn = ""
    framework: Literal["builtin", "external"] = "builtin"
    model_provider: Literal["openai", "anthropic", "openai_compatible", "ollama"] = "openai"
    model_name: str = Field(default="gpt-4o-mini", min_length=1, max_length=200)
    model_base_url: str | None = Field(default=None, max_length=500)
    model_api_key: str | None = Field(default=None, max_length=8192)
    output_format: Literal["text", "markdown", "json", "voice"] | None = None
    tool_call_limit: StrictInt | None = Field(default=None, ge=0, le=10_000)
    max_run_seconds: StrictInt | None = Field(default=None, ge=1, le=86_400)
    graph: list[GraphItemIn] = Field(default_factory=list, max_length=200)

    @field_validator("unique_name")
    @classmethod
    def _unique(cls, value: str | None) -> str | None:
        if value is not None and not _UNIQUE.match(value):
            raise ValueError("letters, digits, '_', '.', '-' only, starting with a letter or digit")
        return value

    @field_validator("model_base_url")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        return _outbound_url(value) if value else value


def _outbound_url(value: str) -> str:
    """An http(s) URL the server may connect to: a literal internal address needs OUTBOUND_ALLOWLIST."""
    if not _URL.match(value):
        raise ValueError("must be an http(s) URL")
    try:
        egress.check_saved_url(value, egress.Allowlist.parse(settings.OUTBOUND_ALLOWLIST))
    except egress.OutboundRefused as exc:
        raise ValueError(str(exc)) from None
    return value


def instructions_text(value: str | InstructionsIn) -> str:
    if isinstance(value, str):
        return value
    parts = [value.general, *value.role, *value.goal]
    return "\n".join(p for p in parts if p)


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", name.strip()).strip("-.").lower()
    return slug[:180] or "agent"


def _require_admin(actor: Actor) -> None:
    if not actor.can(Role.ADMIN):
        raise Forbidden(f"Managing agents needs the admin role; yours is {actor.role}")


def _write_graph(actor: Actor, agent: Agent, graph: list[GraphItemIn]) -> None:
    # Secrets are never echoed, so a graph sent back as read omits them: keep those of the same server.
    previous = {i.key: i for i in agent.graph_items.all()}
    seen: set[str] = set()
    rows = []
    for index, item in enumerate(graph):
        key = item.id or f"gi-{secrets.token_hex(6)}"
        if key in seen:
            raise Invalid(f"graph[{index}].id", f"duplicate graph item id {key!r}")
        seen.add(key)
        settings: dict[str, Any] = {}
        secret: dict[str, Any] = {}
        item_id = item.item_id or ""
        if item.type == "mcp":
            if item.settings.mcp_settings is None:
                raise Invalid(
                    f"graph[{index}].settings.mcp_settings", "an mcp item needs mcp_settings with a url"
                )
            mcp = item.settings.mcp_settings.model_dump(exclude_none=True)
            sent = item.settings.mcp_settings.model_fields_set
            old = previous.get(key)
            kept = old.secret_settings() if old and old.mcp_settings.get("url") == mcp["url"] else {}
            secret_names = {*SECRET_MCP_KEYS, *kept, *(k for k in mcp if is_secret_key(k))}
            for name in sorted(secret_names):
                value = mcp.pop(name, None)
                if name not in sent:
                    value = kept.get(name)
                if value:
                    secret[name] = value
            settings["mcp_settings"] = mcp
            item_id = item_id or mcp.get("id") or key
        else:
            if not item.item_id:
                raise Invalid(f"graph[{index}].item_id", "an agent item needs item_id, the sub-agent's id")
            if (
                item.item_id == agent.id
                or not Agent.objects.filter(pk=item.item_id, organization_id=actor.organization_id).exists()
            ):
                raise Invalid(
                    f"graph[{index}].item_id", f"no other agent {item.item_id!r} in this organization"
                )
            if _reaches(item.item_id, agent.id):
                raise Invalid(
                    f"graph[{index}].item_id",
                    "this sub-agent, or one of its own, delegates back to this agent",
                )
        rows.append(
            GraphItem(
                agent=agent,
                key=key,
                type=item.type,
                item_id=item_id,
                name=item.name or "",
                settings=settings,
                secret_settings_encrypted=crypto.encrypt_json(secret) if secret else "",
                position=index,
            )
        )
    agent.graph_items.all().delete()
    GraphItem.objects.bulk_create(rows)


def _reaches(start: str, target: str) -> bool:
    """Whether delegating to `start` can lead back to `target` (a sub-agent cycle never ends)."""
    seen, frontier = set(), [start]
    while frontier:
        current = frontier.pop()
        if current == target:
            return True
        if current in seen:
            continue
        seen.add(current)
        frontier += GraphItem.objects.filter(agent_id=current, type="agent").values_list("item_id", flat=True)
    return False


AUDIT_SECRETS = ("model_api_key", "graph_secrets")


def audit_view(agent: Agent) -> dict[str, Any]:
    """The agent's audited fields; the secrets are compared in memory and recorded only as "changed"."""
    items = list(agent.graph_items.all()) if agent.pk else []
    return {
        **{
            name: getattr(agent, name)
            for name in (
                "name",
                "unique_name",
                "description",
                "instructions",
                "framework",
                "model_provider",
                "model_name",
                "model_base_url",
                "output_format",
                "tool_call_limit",
            )
        },
        "max_run_seconds": (agent.settings or {}).get("max_run_seconds"),
        "model_api_key": agent.get_model_api_key(),
        "graph": [
            {"id": i.key, "type": i.type, "item_id": i.item_id, "name": i.name, **i.mcp_settings}
            for i in items
        ],
        "graph_secrets": {i.key: i.secret_settings() for i in items if i.secret_settings_encrypted},
    }


def create_agent(actor: Actor, data: AgentIn) -> Agent:
    _require_admin(actor)
    agent = Agent(organization_id=actor.organization_id)
    _apply(agent, data, set(data.model_fields_set) | {"name", "framework", "model_provider", "model_name"})
    agent.unique_name = data.unique_name or _slug(data.name)
    try:
        with transaction.atomic():
            agent.save(force_insert=True)
            _write_graph(actor, agent, data.graph)
            changes = audit.diff({}, audit_view(agent), AUDIT_SECRETS)
            audit.record(actor, "agent.created", **_object(agent), changes=changes)
    except IntegrityError:
        raise Conflict(f"An agent with unique_name {agent.unique_name!r} already exists") from None
    return agent


def _apply(agent: Agent, data: AgentIn, fields: set[str]) -> None:
    for name in ("name", "description", "framework", "model_provider", "model_name", "tool_call_limit"):
        if name in fields:
            setattr(agent, name, getattr(data, name))
    if "unique_name" in fields and data.unique_name:
        agent.unique_name = data.unique_name
    if "instructions" in fields:
        agent.instructions = instructions_text(data.instructions)
    if "model_base_url" in fields:
        agent.model_base_url = data.model_base_url or ""
    if "output_format" in fields:
        agent.output_format = data.output_format or ""
    if "model_api_key" in fields:
        agent.set_model_api_key(data.model_api_key)
    if "max_run_seconds" in fields:  # kept in settings: no column for a limit most agents leave empty
        agent.settings = {k: v for k, v in (agent.settings or {}).items() if k != "max_run_seconds"}
        if data.max_run_seconds:
            agent.settings["max_run_seconds"] = data.max_run_seconds


def _object(agent: Agent) -> dict[str, str]:
    return {"object_type": "agent", "object_id": agent.id, "object_label": agent.name}


def update_agent(actor: Actor, agent: Agent, raw: dict[str, Any], data: AgentIn) -> Agent:
    _require_admin(actor)
    fields = set(raw) & set(AgentIn.model_fields)
    before = audit_view(agent)
    _apply(agent, data, fields)
    try:
        with transaction.atomic():
            agent.save()
            if "graph" in fields:
                _write_graph(actor, agent, data.graph)
            changes = audit.diff(before, audit_view(agent), AUDIT_SECRETS)
            audit.record(actor, "agent.updated", **_object(agent), changes=changes)
    except IntegrityError:
        raise Conflict(f"An agent with unique_name {agent.unique_name!r} already exists") from None
    return agent


def delete_agent(actor: Actor, agent: Agent) -> None:
    _require_admin(actor)
    used_by = GraphItem.objects.filter(type="agent", item_id=agent.id).select_related("agent").first()
    if used_by:
        raise Conflict(
            f"Agent {agent.id} is a sub-agent of {used_by.agent.name!r}; remove it from that graph first"
        )
    count = agent.tasks.count()
    if count:
        raise Conflict(f"Agent {agent.id} has {count} tasks; their history would be lost", tasks=count)
    with transaction.atomic():
        changes = audit.diff(audit_view(agent), {}, AUDIT_SECRETS)
        audit.record(actor, "agent.deleted", **_object(agent), changes=changes)
        agent.delete()


def get_agent(actor: Actor, agent_id: str) -> Agent:
    try:
        return Agent.objects.get(pk=agent_id, organization_id=actor.organization_id)
    except Agent.DoesNotExist:
        raise NotFound(f"Agent {agent_id} not found") from None

"""Agents as GET /agents/{id} describes them: enough to find MCP graph items for user tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from tasks_app.client.models.task import WireModel


class AgentGraphItemType(StrEnum):
    SourceNode = "source_node"
    Agent = "agent"
    Workflow = "workflow"
    Tool = "tool"
    HumanInTheLoop = "human_in_the_loop"
    Sleep = "xpsleep-agent-delay"
    CustomAgent = "custom_agent"
    Storage = "storage"
    CodingAgent = "coding_agent"
    MCP = "mcp"
    LocalDB = "local_db"
    Skills = "skills"


class MCPServerDetails(WireModel):
    id: str | None = None
    type: str | None = "remote"
    name: str | None = None
    command: str | None = None
    url: str | None = None
    transport: str | None = "streamable-http"
    auth_type: str | None = "none"
    api_key: str | None = None
    use_secrets_manager: bool | None = False
    client_id: str | None = None
    client_secret: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    env_vars: dict[str, str] = Field(default_factory=dict)
    allowed_tools: list[str] = Field(default_factory=list)
    additional_scopes: list[str] = Field(default_factory=list)
    share_user_token_across_other_agents: bool | None = True
    sso_token: str | None = "access"
    sso_audience: str | None = None


class AgentGraphItemSettings(WireModel):
    model_config = ConfigDict(extra="allow")

    instructions: Any = None
    description: str | None = None
    mcp_settings: MCPServerDetails | None = None


class AgentGraphItem(WireModel):
    id: str | None = None  # the graph item id: the key of `user_tokens`
    item_id: str | None = None
    name: str | None = None
    type: str
    sub_type: str | None = None
    targets: list[str] = Field(default_factory=list)
    settings: AgentGraphItemSettings = Field(default_factory=AgentGraphItemSettings)
    is_first: bool | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        try:
            return AgentGraphItemType(value)
        except ValueError:
            return value


class AgentGraph(WireModel):
    items: list[AgentGraphItem] = Field(default_factory=list)

    def mcp_items(self) -> list[AgentGraphItem]:
        return [item for item in self.items if item.type == AgentGraphItemType.MCP]


class AgentInstructions(WireModel):
    role: list[str] = Field(default_factory=list)
    goal: list[str] = Field(default_factory=list)
    general: str = ""


class AgentsListItem(WireModel):
    id: str
    name: str
    organization_id: str
    icon: str | None = None
    description: str | None = None
    status: str | None = None
    type: str | None = None
    created_at: datetime | None = None

"""Agents: read an agent's configuration, e.g. to find the MCP graph items user tokens are keyed by."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Unpack

from pydantic import Field, PrivateAttr, field_validator

from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException
from tasks_app.client.models.agent import AgentGraph, AgentInstructions, AgentsListItem
from tasks_app.client.models.task import WireModel
from tasks_app.client.task import Task, segment
from tasks_app.client.tasks import CreateOptions, Tasks
from tasks_app.client.transport import Call, asend, parse, parse_list, send


class Agent(WireModel):
    id: str
    organization_id: str
    name: str
    unique_name: str | None = None
    description: str | None = None
    framework: str | None = None
    model_provider: str | None = None
    model_name: str | None = None
    instructions: AgentInstructions = Field(default_factory=AgentInstructions)
    status: str | None = None
    type: str | None = None
    output_format: str | None = None
    graph: AgentGraph = Field(default_factory=AgentGraph)
    tools: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _configuration: Configuration | None = PrivateAttr(default=None)

    @field_validator("graph", mode="before")
    @classmethod
    def _graph_items(cls, value: Any) -> Any:
        return {"items": value} if isinstance(value, list) else value

    @field_validator("instructions", mode="before")
    @classmethod
    def _instructions(cls, value: Any) -> Any:
        return {"general": value} if isinstance(value, str) else value

    def _tasks(self) -> Tasks:
        return Tasks(self._configuration)

    def create_task(
        self, prompt: str | None = "", file_urls: list[str] | None = None, **options: Unpack[CreateOptions]
    ) -> Task:
        return self._tasks().create(self.id, prompt=prompt, file_urls=file_urls, **options)

    async def acreate_task(
        self, prompt: str | None = "", file_urls: list[str] | None = None, **options: Unpack[CreateOptions]
    ) -> Task:
        return await self._tasks().acreate(self.id, prompt=prompt, file_urls=file_urls, **options)


class Agents:
    """The Agents module (read side). `Agents()` reads the same environment as Tasks()."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        self.configuration = configuration or Configuration()

    def _get_call(self, agent_id: str | None, version: str | int | None) -> Call:
        agent_id = agent_id or self.configuration.agent_id
        if not agent_id:
            raise ModuleException(
                400, "Failed to load agent - no agent_id given and XPANDER_AGENT_ID is not set"
            )
        headers = {"x-agent-version": str(version)} if version is not None else {}
        return Call("load agent", "GET", f"/agents/{segment(agent_id)}", headers=headers)

    def _agent(self, data: Any, call: Call) -> Agent:
        agent = parse(Agent, data, call)
        agent._configuration = self.configuration
        return agent

    def get(self, agent_id: str | None = None, version: str | int | None = None) -> Agent:
        call = self._get_call(agent_id, version)
        return self._agent(send(self.configuration, call), call)

    async def aget(self, agent_id: str | None = None, version: str | int | None = None) -> Agent:
        call = self._get_call(agent_id, version)
        return self._agent(await asend(self.configuration, call), call)

    def list(self) -> list[AgentsListItem]:
        call = Call("list agents", "GET", "/agents/list")
        return parse_list(AgentsListItem, send(self.configuration, call), call)

    async def alist(self) -> list[AgentsListItem]:
        call = Call("list agents", "GET", "/agents/list")
        return parse_list(AgentsListItem, await asend(self.configuration, call), call)

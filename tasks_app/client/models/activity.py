"""The activity log of a task (GET /activity/{agent_id}/{task_id}), parsed as xpander-wire.md 4.3 says.

Entries carry no discriminator: each one is tried against every model and the one that sets the
most fields wins (pydantic's smart union), ties going to declaration order. An entry naming a
gateway action this client does not model goes straight to AgentActivityThreadOtherEntry, and
anything that fits nothing lands there too, so one new entry kind never breaks the whole log.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from tasks_app.client.models.events import MCPOAuthGetTokenResponse, ToolCallRequestReasoning
from tasks_app.client.models.task import User, WireModel


class AgentActivityThreadMessageContent(WireModel):
    text: str | None = None
    files: list[str] | None = Field(default_factory=list)


class AgentActivityThreadMessage(WireModel):
    id: str
    created_at: datetime
    role: Literal["user", "agent"]
    content: AgentActivityThreadMessageContent
    sub_execution_result: bool | None = False
    user: User | None = None


class AgentActivityThreadToolCall(WireModel):
    id: str
    created_at: datetime
    tool_name: str
    payload: Any
    is_error: bool | None = False
    reasoning: ToolCallRequestReasoning | None = None
    result: Any = None
    plan_task_id: str | None = None


class AgentActivityThreadReasoningType(StrEnum):
    Think = "think"
    Analyze = "analyze"


class AgentActivityThreadReasoning(WireModel):
    id: str
    created_at: datetime
    type: AgentActivityThreadReasoningType
    title: str
    confidence: float
    thought: str | None = None
    action: str | None = None
    result: str | None = None
    analysis: str | None = None
    plan_task_id: str | None = None


class AgentActivityThreadSubAgentTrigger(WireModel):
    id: str
    created_at: datetime
    agent_id: str
    query: str | None = None
    files: list[str] | None = Field(default_factory=list)
    reasoning: ToolCallRequestReasoning
    plan_task_id: str | None = None


class AgentActivityThreadAuth(MCPOAuthGetTokenResponse):
    """An MCP sign-in step: `type` is login_required, token_ready, token_issue or not_supported."""

    id: str
    created_at: datetime


class _GatewayEntry(WireModel):
    id: str
    created_at: datetime
    agent_id: str | None = None
    reasoning: str
    title: str = ""
    description: str = ""


class AgentActivityThreadGatewayCreateExecution(_GatewayEntry):
    action: Literal["create_execution"] = "create_execution"
    created_execution_id: str
    query: str = ""
    is_async: bool | None = False


class AgentActivityThreadGatewayAskExecution(_GatewayEntry):
    action: Literal["ask_execution"] = "ask_execution"
    created_execution_id: str
    new_input: str
    rejected: str | None = None


class AgentActivityThreadGatewayStopExecution(_GatewayEntry):
    action: Literal["stop_execution"] = "stop_execution"
    created_execution_id: str


class AgentActivityThreadGatewayContinueExecution(_GatewayEntry):
    action: Literal["continue_execution"] = "continue_execution"
    created_execution_id: str
    rejected: str | None = None


class AgentActivityThreadGatewayExecutionResultEntry(WireModel):
    created_execution_id: str
    status: str | None = None
    result: str | None = None


class AgentActivityThreadGatewayGetExecutionsResult(_GatewayEntry):
    action: Literal["get_executions_result"] = "get_executions_result"
    executions: list[AgentActivityThreadGatewayExecutionResultEntry] = Field(default_factory=list)


class AgentActivityThreadOtherEntry(WireModel):
    """An entry kind this client does not model; its keys are kept as extra attributes."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    created_at: datetime | None = None
    agent_id: str | None = None


AgentActivityThreadMessageType = (
    AgentActivityThreadMessage
    | AgentActivityThreadToolCall
    | AgentActivityThreadReasoning
    | AgentActivityThreadSubAgentTrigger
    | AgentActivityThreadAuth
    | AgentActivityThreadGatewayCreateExecution
    | AgentActivityThreadGatewayAskExecution
    | AgentActivityThreadGatewayStopExecution
    | AgentActivityThreadGatewayContinueExecution
    | AgentActivityThreadGatewayGetExecutionsResult
    | AgentActivityThreadOtherEntry
)

GATEWAY_ACTIONS = frozenset(
    {"create_execution", "ask_execution", "stop_execution", "continue_execution", "get_executions_result"}
)


def _route_entry(value: Any) -> Any:
    if isinstance(value, dict):
        action = value.get("action")
        if isinstance(action, str) and action not in GATEWAY_ACTIONS:
            return AgentActivityThreadOtherEntry(**value)
    return value


class AgentActivityThread(WireModel):
    id: str
    created_at: datetime
    messages: list[Annotated[AgentActivityThreadMessageType, BeforeValidator(_route_entry)]]
    user: User | None = None

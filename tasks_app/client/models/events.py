"""Task events as the SSE stream delivers them."""

from __future__ import annotations

import contextlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import field_validator

from tasks_app.client.models.task import WireModel


class TaskUpdateEventType(StrEnum):
    Connected = "connected"
    TaskCreated = "task_created"
    TaskUpdated = "task_updated"
    TaskFinished = "task_finished"
    TaskCompactization = "task_compactization"
    Chunk = "chunk"
    ToolCallRequest = "tool_call_request"
    ToolCallResult = "tool_call_result"
    SubAgentTrigger = "sub_agent_trigger"
    Think = "think"
    Analyze = "analyze"
    AuthEvent = "auth_event"
    PlanUpdated = "plan_updated"
    ContextStatus = "context_status"
    AgentGatewayDecision = "agent_gateway_decision"
    ProcessStateChanged = "process_state_changed"
    ProcessUpdate = "process_update"
    GatewaySteerApplied = "gateway_steer_applied"
    AskUserQuestions = "ask_user_questions"
    SubTaskCreated = "sub_task_created"
    SubTaskUpdated = "sub_task_updated"
    SubTaskFinished = "sub_task_finished"
    InviteMember = "invite_member"
    MemberInvited = "member_invited"
    AskForSecret = "ask_for_secret"
    SecretSaved = "secret_saved"
    LiveSurfaceCreated = "live_surface_created"
    InlineCard = "inline_card"


class EventIdentity(WireModel):
    name: str
    icon: str | None = None


class TaskUpdateEvent(WireModel):
    """One event. `data` is a Task for task_* events, otherwise what the producer sent
    (a text delta for `chunk`, a dict for tool calls). `id` is the server's sequence number."""

    id: int | None = None
    type: str
    task_id: str
    organization_id: str
    time: datetime
    data: Any = None
    identity: EventIdentity | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        # A type this client does not know stays a plain string rather than dropping the event.
        with contextlib.suppress(ValueError):
            return TaskUpdateEventType(value)
        return value


class ToolCallRequestReasoning(WireModel):
    title: str | None = None
    description: str | None = None


class ToolCallRequest(WireModel):
    """Helper to read `tool_call_request` data: `ToolCallRequest.model_validate(event.data)`."""

    request_id: str
    operation_id: str
    tool_call_id: str | None = None
    graph_node_id: str | None = None
    tool_name: str | None = None
    payload: Any = None
    reasoning: ToolCallRequestReasoning | None = None
    plan_task_id: str | None = None


class ToolCallResult(ToolCallRequest):
    result: Any = None
    is_error: bool = False
    approval_request_id: str | None = None


class MCPOAuthResponseType(StrEnum):
    NotSupported = "not_supported"
    LoginRequired = "login_required"
    TokenIssue = "token_issue"
    TokenReady = "token_ready"


class TokenReadyData(WireModel):
    access_token: str
    server_url: str | None = None
    server_name: str | None = None


class LoginRequiredData(WireModel):
    url: str
    server_url: str
    server_name: str


class GenericAuthData(WireModel):
    message: str
    server_url: str | None = None
    server_name: str | None = None


class MCPOAuthGetTokenResponse(WireModel):
    """`auth_event` data and the activity log's auth entry: {type, data}."""

    type: MCPOAuthResponseType
    data: TokenReadyData | LoginRequiredData | GenericAuthData

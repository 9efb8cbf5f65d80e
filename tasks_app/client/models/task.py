"""The value types a Task is made of: statuses, the input, the user, token counts."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Ignores keys it does not know: the server may add fields without breaking the client."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AgentExecutionStatus(StrEnum):
    Pending = "pending"
    Executing = "executing"
    Paused = "paused"
    Error = "error"
    Failed = "failed"
    Completed = "completed"
    Stopped = "stopped"


FINAL_STATUSES = frozenset(
    {
        AgentExecutionStatus.Error,
        AgentExecutionStatus.Failed,
        AgentExecutionStatus.Completed,
        AgentExecutionStatus.Stopped,
    }
)


class OutputFormat(StrEnum):
    Text = "text"
    Markdown = "markdown"
    Json = "json"
    Voice = "voice"


class ThinkMode(StrEnum):
    Default = "default"
    Harder = "harder"


class LLMReasoningEffort(StrEnum):
    Low = "low"
    Medium = "medium"
    High = "high"
    XHigh = "xhigh"


class User(WireModel):
    """The end user a task runs for; `email` is required, as upstream."""

    id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str
    additional_attributes: dict[str, Any] | None = None
    timezone: str | None = None


class AttachmentRef(WireModel):
    url: str
    name: str | None = None
    mime: str | None = None
    size: int | None = None
    kind: str | None = None  # image | pdf | document | text | audio | video | archive | unknown
    sha256: str | None = None
    expires_at: str | None = None
    source: str | None = None
    transcript: str | None = None


class Principal(WireModel):
    kind: str
    id: str
    email: str | None = None
    display_name: str | None = None


class AgentExecutionInput(WireModel):
    text: str | None = ""
    files: list[str] = Field(default_factory=list)
    attachments: list[AttachmentRef] = Field(default_factory=list)
    user: User | None = None
    principal: Principal | None = None


class Tokens(WireModel):
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    total_tokens: int = 0


class HumanInTheLoopRequest(WireModel):
    wait_node_id: str


class PendingECARequest(WireModel):
    connector_name: str
    auth_url: str

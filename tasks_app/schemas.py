"""Pydantic models of the bodies the REST API accepts (the xpander wire shapes).

They ignore unknown keys, as the SDK sends many optional fields, but type-check the ones we use,
so a wrong type is a 422 that names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

# Numbers as the wire sends them: an int is fine where a float is expected, a bool or a string is not.
Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=10**9)]
Count = Annotated[StrictInt, Field(ge=0, le=10**12)]

StatusName = Literal["pending", "executing", "paused", "error", "failed", "completed", "stopped"]


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserIn(Lenient):
    id: str | None = Field(default=None, max_length=200)
    email: str = Field(max_length=320)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    additional_attributes: dict[str, Any] | None = None
    timezone: str | None = Field(default=None, max_length=64)


class AttachmentIn(Lenient):
    url: str = Field(max_length=2048, pattern=r"^https?://")
    name: str | None = None
    mime: str | None = None
    size: StrictInt | None = Field(default=None, ge=0)
    kind: str | None = None


class TaskInputIn(Lenient):
    text: str | None = ""
    files: list[str] = Field(default_factory=list)
    user: UserIn | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)

    @field_validator("files")
    @classmethod
    def _urls(cls, files: list[str]) -> list[str]:
        for url in files:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"file URL must be http(s): {url[:100]!r}")
            if len(url) > 2048:
                raise ValueError("file URL longer than 2048 characters")
        return files


TokenValue = str | dict[str, str]


class TaskCreateIn(Lenient):
    """POST /agent-execution/{agent_id}: the SDK's create body (xpander-wire.md 2.1)."""

    id: str | None = Field(default=None, max_length=64)  # existing_task_id: a follow-up turn
    input: TaskInputIn = Field(default_factory=TaskInputIn)
    payload_extension: dict[str, Any] | None = None
    source: str | None = Field(default=None, max_length=200)
    output_format: Literal["text", "markdown", "json", "voice"] | None = None
    output_schema: dict[str, Any] | None = None
    events_streaming: StrictBool = False
    additional_context: str | None = None
    instructions_override: str | None = None
    expected_output: str | None = None
    triggering_agent_id: str | None = Field(default=None, max_length=64)
    title: str | None = Field(default=None, max_length=500)
    think_mode: Literal["default", "harder"] | None = "default"
    disable_attachment_injection: StrictBool = False
    tool_call_limit: StrictInt | None = Field(default=None, ge=0, le=10_000)
    user_tokens: dict[str, TokenValue | dict[str, str]] | None = None
    return_metrics: StrictBool = False
    llm_model_provider: str | None = Field(default=None, max_length=64)
    llm_model_name: str | None = Field(default=None, max_length=200)
    llm_reasoning_effort: Literal["low", "medium", "high", "xhigh"] | None = None
    run_locally: StrictBool = False  # the SDK's `--invoke` test mode runs the task in the worker itself

    @field_validator("user_tokens")
    @classmethod
    def _tokens(cls, tokens: dict[str, Any] | None) -> dict[str, Any] | None:
        if tokens is None:
            return None
        if len(tokens) > 100:
            raise ValueError("at most 100 user tokens")
        for key, value in tokens.items():
            if not key or len(key) > 200:
                raise ValueError("graph item ids must be 1 to 200 characters")
            if isinstance(value, str) and (not value or len(value) > 8192):
                raise ValueError(f"token for {key!r} must be 1 to 8192 characters")
        return tokens


class TaskUpdateIn(Lenient):
    """PATCH /agent-execution/{task_id}/update: a sparse update or a full Task dump from save()."""

    status: StatusName | None = None
    result: str | None = None
    source: str | None = Field(default=None, max_length=200)
    last_executed_node_id: str | None = Field(default=None, max_length=200)
    internal_status: str | None = None
    title: str | None = Field(default=None, max_length=500)


class EventIn(Lenient):
    """One pushed event (POST /agent-execution/{task_id}/events/push)."""

    type: str = Field(min_length=1, max_length=64)
    data: Any = None


class TokensIn(Lenient):
    completion_tokens: Count = 0
    prompt_tokens: Count = 0
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0


class TaskReportIn(Lenient):
    """POST /agent-execution/{agent_id}/report_task: a task that ran outside the server."""

    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Finish this pending task of yours, or create the task under this new id (not in the "
        "server's lower-case UUID form, which only names existing tasks); omit it for a server id",
    )
    input: str | None = None
    llm_response: Any = None
    tokens: TokensIn | None = None
    is_success: StrictBool = True
    result: str | None = None
    duration: Seconds | None = 0
    used_tools: list[str] | None = None


class MetricsReportIn(BaseModel):
    """POST /agents-metrics/{agent_id}/execution: the SDK's ExecutionMetricsReport."""

    model_config = ConfigDict(extra="allow")

    execution_id: str = Field(min_length=1, max_length=64)
    status: str | None = None
    duration: Seconds | None = None
    ai_model: str | None = None


class McpServerDetailsIn(Lenient):
    """POST /mcp_auth/{agent_id}/{user_id}/get_token: the SDK's MCPServerDetails dump (xpander-wire.md 6).

    Only the fields that pick the graph item are read; the rest of the dump is ignored.
    """

    id: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=2048)
    name: str | None = Field(default=None, max_length=200)

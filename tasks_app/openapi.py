"""The OpenAPI document of /api: what each route really accepts and answers.

Routes parse their own bodies (so malformed JSON is a 400 and a bad field a 422 that names it), so
ninja cannot see the request models: `body()` declares them, `responses()` the statuses a route
can answer with their shapes, and `Api` adds those models and the SSE route, a plain Django view,
to the document. The output models mirror tasks_app.wire (the xpander shapes, xpander-wire.md 3-5);
tests/test_openapi_fuzz.py checks every answer against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import NinjaAPI
from pydantic import BaseModel, ConfigDict, Field

from tasks_app import schemas

REF = "#/components/schemas/{model}"
StatusName = schemas.StatusName
OutputFormat = Literal["text", "markdown", "json", "voice"]


class Out(BaseModel):
    """Answers may carry more keys than documented (the SDK ignores unknown keys)."""

    model_config = ConfigDict(extra="allow")


class ErrorOut(Out):
    detail: str = Field(description="What is wrong, in words a caller can act on")
    field: str | None = Field(default=None, description="The request field at fault (422, some 400s)")


class TokensOut(Out):
    completion_tokens: int
    prompt_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    total_tokens: int


class TaskInputOut(Out):
    text: str | None
    files: list[str]
    user: dict[str, Any] | None
    attachments: list[dict[str, Any]] | None = None


class TaskOut(Out):
    """The full Task JSON (xpander-wire.md 3.1); `user_tokens` is never echoed."""

    id: str
    agent_id: str
    organization_id: str
    input: TaskInputOut
    status: StatusName
    internal_status: str | None
    result: str | None
    created_at: datetime
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    events_streaming: bool
    is_manually_stopped: bool
    title: str | None
    source: str
    parent_execution: str | None
    sub_executions: list[str]
    triggering_agent_id: str | None
    payload_extension: dict[str, Any] | None
    output_format: OutputFormat | None
    output_schema: dict[str, Any] | None
    additional_context: str | None
    instructions_override: str | None
    expected_output: str | None
    think_mode: Literal["default", "harder"]
    disable_attachment_injection: bool
    tool_call_limit: int | None
    llm_model_provider: str | None
    llm_model_name: str | None
    llm_reasoning_effort: Literal["low", "medium", "high", "xhigh"] | None
    return_metrics: bool
    last_executed_node_id: str | None
    agent_version: str | None
    mcp_servers: list[Any]
    user_tokens: None
    tokens: TokensOut
    used_tools: list[str]
    duration: float | None
    turns: int
    execution_attempts: int
    is_orchestration: bool
    is_gateway: bool
    is_app: bool
    background_auth_eligible: bool
    should_update_parent: bool
    must_deep_plan: bool


class TaskListItemOut(Out):
    """A TasksListItem (xpander-wire.md 4.5)."""

    id: str
    agent_id: str
    organization_id: str
    status: StatusName
    internal_status: str | None
    user_id: str | None
    parent_task_id: str | None
    triggering_agent_id: str | None
    created_at: datetime
    updated_at: datetime | None
    result: str | None
    title: str | None
    source_node_type: str | None


class EntryOut(Out):
    id: str
    created_at: datetime


class MessageOut(EntryOut):
    role: Literal["user", "agent"]
    content: dict[str, Any]
    user: dict[str, Any] | None = None


class ToolCallOut(EntryOut):
    tool_name: str
    payload: Any
    result: Any
    is_error: bool


class ReasoningOut(EntryOut):
    type: Literal["think", "analyze"]
    title: str
    confidence: float
    thought: str | None


class SubAgentTriggerOut(EntryOut):
    agent_id: str
    query: str | None
    files: list[str]
    reasoning: dict[str, Any]


class AuthEntryOut(EntryOut):
    type: Literal["not_supported", "login_required", "token_issue", "token_ready"]
    data: dict[str, Any]


class ActivityThreadOut(Out):
    """AgentActivityThread (xpander-wire.md 4.3); `next_after` only when the request pages."""

    id: str
    created_at: datetime
    messages: list[MessageOut | ToolCallOut | ReasoningOut | SubAgentTriggerOut | AuthEntryOut]
    user: dict[str, Any] | None = None
    next_after: int | None = Field(
        default=None, description="With ?limit: pass as ?after= for the next page; null on the last page"
    )


class InstructionsOut(Out):
    role: list[str]
    goal: list[str]
    general: str


class GraphItemOut(Out):
    id: str
    item_id: str
    type: str
    name: str | None
    targets: list[str]
    settings: dict[str, Any]


class AgentOut(Out):
    """Agent JSON as the SDK parses it (xpander-wire.md 5): `framework` is the SDK's value."""

    id: str
    organization_id: str
    name: str
    unique_name: str
    description: str | None
    framework: str
    model_provider: str
    model_name: str
    llm_api_base: str | None
    instructions: InstructionsOut
    status: Literal["ACTIVE"]
    type: str
    output_format: OutputFormat | None
    graph: list[GraphItemOut]
    tools: list[Any]
    agno_settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime | None
    execution_framework: str
    has_model_api_key: bool
    tool_call_limit: int | None


class AdminAgentOut(AgentOut):
    """/api/v1/agents: `framework` is ours (builtin|external), `instructions` the plain text."""

    framework: Literal["builtin", "external"]
    model_base_url: str | None
    instructions: str  # type: ignore[assignment]


class AgentSummaryOut(Out):
    id: str
    name: str
    icon: str
    instructions: InstructionsOut
    status: str
    organization_id: str
    created_at: datetime
    description: str
    type: str


class PushOut(Out):
    accepted: int
    last_seq: int | None


class MetricsOut(Out):
    task_id: str
    stored: bool


class TaskEventOut(Out):
    """A TaskUpdateEvent (xpander-wire.md 3.2): the `data` of one server-sent event."""

    type: str
    task_id: str
    organization_id: str
    time: datetime
    data: Any = Field(description="A Task for task_* events; a text delta, an object or null otherwise")


class TokenResponseOut(Out):
    """MCPOAuthGetTokenResponse (xpander-wire.md 6)."""

    type: Literal["not_supported", "login_required", "token_issue", "token_ready"]
    data: dict[str, Any]


ERROR_TEXT = {
    400: "Malformed request (bad JSON, NaN/Infinity, nesting too deep, NUL in the URL)",
    401: "Missing or invalid API key (x-api-key header)",
    403: "Your role may not do this",
    404: "Unknown, or not your organization's",
    409: "Not in a state that allows this",
    413: "Too large",
    422: "A field is invalid; `field` names it",
    429: "Too many at once (e.g. open event streams of one API key)",
}
BODY = (400, 413, 422)  # routes that read a JSON body


def responses(ok: Any, *codes: int, status: int = 200) -> dict[int, Any]:
    """ninja `response=`: the success shape and the errors a route can answer (401, 404, 422 always)."""
    out: dict[int, Any] = {status: ok}
    for code in sorted({400, 401, 404, 422, *codes}):
        out[code] = ErrorOut
    return out


_REQUEST_MODELS: dict[str, type[BaseModel]] = {}


def ref(model: type[BaseModel]) -> dict[str, str]:
    _REQUEST_MODELS[model.__name__] = model
    return {"$ref": REF.format(model=model.__name__)}


def body(schema: type[BaseModel] | dict[str, Any], *, multipart: bool = False) -> dict[str, Any]:
    """ninja `openapi_extra=` declaring a JSON request body we parse ourselves."""
    json_schema = ref(schema) if isinstance(schema, type) else schema
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if multipart:
        content["multipart/form-data"] = {
            "schema": {
                "type": "object",
                "properties": {
                    "body": {"type": "string", "description": "The JSON body, as text"},
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                },
            }
        }
    return {"requestBody": {"required": False, "content": content}}


def query(*params: tuple[str, dict[str, Any], str]) -> dict[str, Any]:
    """ninja `openapi_extra=` declaring query parameters a route reads from request.GET."""
    return {
        "parameters": [
            {"in": "query", "name": name, "required": False, "schema": schema, "description": text}
            for name, schema, text in params
        ]
    }


def merge(*extras: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for extra in extras:
        for key, value in extra.items():
            out[key] = [*out.get(key, []), *value] if isinstance(value, list) else value
    return out


def _error_response(code: int) -> dict[str, Any]:
    return {"description": ERROR_TEXT[code], "content": {"application/json": {"schema": ref(ErrorOut)}}}


SSE_PATH = "/api/agent-execution/{task_id}/events"
SSE_OPERATION: dict[str, Any] = {
    "operationId": "tasks_app_sse_task_events",
    "summary": "Task events (server-sent events)",
    "description": (
        "Replays the task's event log after `Last-Event-ID` (or `?since=`), then follows it live with "
        "keep-alive comments, and closes once the task is finished and every event was sent. Also served "
        "under /api/{organization_id}/..., the path the official SDK uses. Each event is "
        "`id: <seq>`, `event: <type>`, `data: <TaskUpdateEvent JSON>`."
    ),
    "parameters": [
        {"in": "path", "name": "task_id", "required": True, "schema": {"type": "string"}},
        {
            "in": "query",
            "name": "since",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Resume after this event sequence number",
        },
        {
            "in": "header",
            "name": "Last-Event-ID",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Resume after this event sequence number (wins over ?since)",
        },
    ],
    "responses": {
        "200": {
            "description": "The event stream",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "description": "One event; comments (keep-alives) carry no data",
                        "properties": {
                            "id": {"type": "string", "pattern": "^[0-9]+$"},
                            "event": {"type": "string"},
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": ref(TaskEventOut),
                            },
                        },
                        "required": ["id", "event", "data"],
                    }
                }
            },
        },
        **{str(code): _error_response(code) for code in (400, 401, 404, 429)},
    },
    "security": [{"ApiKeyAuth": []}],
}


PLAIN_PATHS: dict[str, dict[str, Any]] = {}  # other plain Django views' operations, by path (rest_workers)


class Api(NinjaAPI):
    """NinjaAPI whose document also holds our request models and the SSE route."""

    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: Any = None) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        components = schema["components"].setdefault("schemas", {})
        _error_response(400)  # registers ErrorOut
        for name, model in list(_REQUEST_MODELS.items()):
            model_schema = model.model_json_schema(ref_template=REF, mode="validation")
            components.update(model_schema.pop("$defs", {}))
            components[name] = model_schema
        schema["paths"][SSE_PATH] = {"get": SSE_OPERATION}
        schema["paths"].update(PLAIN_PATHS)
        return schema

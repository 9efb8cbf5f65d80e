"""Tasks: create, get, list, update and stop tasks (the official SDK's Tasks module)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict, Unpack

from pydantic import BaseModel, PrivateAttr, ValidationError

from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException
from tasks_app.client.models.agent import MCPServerDetails
from tasks_app.client.models.task import (
    AgentExecutionStatus,
    LLMReasoningEffort,
    OutputFormat,
    ThinkMode,
    User,
    WireModel,
)
from tasks_app.client.task import Task, check_internal_status, get_call, segment, stop_call
from tasks_app.client.transport import Call, asend, parse_list, send


class CreateOptions(TypedDict):
    """Everything create()/acreate() accept besides agent_id, existing_task_id, prompt and file_urls."""

    user_details: NotRequired[User | dict[str, Any] | None]
    agent_version: NotRequired[str | None]
    tool_call_payload_extension: NotRequired[dict[str, Any] | None]
    source: NotRequired[str | None]
    worker_id: NotRequired[str | None]
    run_locally: NotRequired[bool]
    output_format: NotRequired[OutputFormat | str | None]
    output_schema: NotRequired[dict[str, Any] | None]
    events_streaming: NotRequired[bool]
    additional_context: NotRequired[str | None]
    instructions_override: NotRequired[str | None]
    test_run_node_id: NotRequired[str | None]
    user_oidc_token: NotRequired[str | None]
    expected_output: NotRequired[str | None]
    mcp_servers: NotRequired[list[MCPServerDetails | dict[str, Any]] | None]
    triggering_agent_id: NotRequired[str | None]
    title: NotRequired[str | None]
    think_mode: NotRequired[ThinkMode | str | None]
    disable_attachment_injection: NotRequired[bool]
    user_tokens: NotRequired[dict[str, str | dict[str, str]] | None]
    tool_call_limit: NotRequired[int | None]
    return_metrics: NotRequired[bool]
    llm_model_provider: NotRequired[str | None]
    llm_model_name: NotRequired[str | None]
    llm_reasoning_effort: NotRequired[LLMReasoningEffort | str | None]


def _value(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _user(value: User | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        user = value if isinstance(value, User) else User.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ModuleException(
            422, f"user_details.{'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    return user.model_dump(mode="json")


def create_call(
    agent_id: str,
    existing_task_id: str | None,
    prompt: str | None,
    file_urls: list[str] | None,
    options: CreateOptions,
) -> Call:
    """The create body with every key present, as the official SDK sends it (xpander-wire.md 2.1)."""
    o: dict[str, Any] = dict(options)
    unknown = set(o) - set(CreateOptions.__annotations__)
    if unknown:
        raise ModuleException(422, f"Failed to create task - unknown option(s): {', '.join(sorted(unknown))}")
    body = {
        "id": existing_task_id,
        "input": {"text": prompt or "", "files": list(file_urls or []), "user": _user(o.get("user_details"))},
        "payload_extension": o.get("tool_call_payload_extension"),
        "source": o.get("source"),
        "worker_id": o.get("worker_id"),
        "output_format": _value(o.get("output_format")),
        "output_schema": o.get("output_schema"),
        "run_locally": bool(o.get("run_locally", False)),
        "events_streaming": bool(o.get("events_streaming", False)),
        "additional_context": o.get("additional_context"),
        "instructions_override": o.get("instructions_override"),
        "test_run_node_id": o.get("test_run_node_id"),
        "user_oidc_token": o.get("user_oidc_token"),
        "expected_output": o.get("expected_output"),
        "mcp_servers": [
            s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in o.get("mcp_servers") or []
        ],
        "triggering_agent_id": o.get("triggering_agent_id"),
        "title": o.get("title"),
        "think_mode": _value(o.get("think_mode") or ThinkMode.Default),
        "disable_attachment_injection": bool(o.get("disable_attachment_injection", False)),
        "tool_call_limit": o.get("tool_call_limit"),
        "user_tokens": o.get("user_tokens"),
        "return_metrics": bool(o.get("return_metrics", False)),
        "llm_model_provider": o.get("llm_model_provider"),
        "llm_model_name": o.get("llm_model_name"),
        "llm_reasoning_effort": _value(o.get("llm_reasoning_effort")),
    }
    headers = {"x-agent-version": str(o["agent_version"])} if o.get("agent_version") else {}
    return Call("create task", "POST", f"/agent-execution/{segment(agent_id)}", json=body, headers=headers)


def update_call(task_id: str, **fields: Any) -> Call:
    check_internal_status(fields.get("internal_status"))
    body = {k: _value(v) for k, v in fields.items() if v is not None}
    return Call("update task", "PATCH", f"/agent-execution/{segment(task_id)}/update", json=body)


class TasksListItem(WireModel):
    """A row of a task list; load()/aload() fetch the full Task."""

    id: str
    agent_id: str
    organization_id: str
    status: AgentExecutionStatus
    internal_status: str | None = None
    user_id: str | None = None
    parent_task_id: str | None = None
    triggering_agent_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    source_node_type: str | None = None
    result: str | None = None
    title: str | None = None
    execution_kind: str | None = None
    process: dict[str, Any] | None = None
    conversation_kind: str | None = None

    _configuration: Configuration | None = PrivateAttr(default=None)

    def load(self) -> Task:
        return Task.load(self.id, self._configuration)

    async def aload(self) -> Task:
        return await Task.aload(self.id, self._configuration)


class Tasks:
    """The Tasks module. `Tasks()` reads XPANDER_BASE_URL, XPANDER_API_KEY and XPANDER_ORGANIZATION_ID."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        self.configuration = configuration or Configuration()

    def _list(self, data: Any, call: Call) -> list[TasksListItem]:
        items = parse_list(TasksListItem, data, call)
        for item in items:
            item._configuration = self.configuration
        return items

    def _task(self, data: Any, call: Call) -> Task:
        return Task.from_json(data, self.configuration, call)

    # create

    def create(
        self,
        agent_id: str,
        existing_task_id: str | None = None,
        prompt: str | None = "",
        file_urls: list[str] | None = None,
        **options: Unpack[CreateOptions],
    ) -> Task:
        """Create a task for `agent_id` (or continue `existing_task_id` with a new prompt)."""
        call = create_call(agent_id, existing_task_id, prompt, file_urls, options)
        return self._task(send(self.configuration, call), call)

    async def acreate(
        self,
        agent_id: str,
        existing_task_id: str | None = None,
        prompt: str | None = "",
        file_urls: list[str] | None = None,
        **options: Unpack[CreateOptions],
    ) -> Task:
        call = create_call(agent_id, existing_task_id, prompt, file_urls, options)
        return self._task(await asend(self.configuration, call), call)

    # get

    def get(self, task_id: str) -> Task:
        call = get_call(task_id)
        return self._task(send(self.configuration, call), call)

    async def aget(self, task_id: str) -> Task:
        call = get_call(task_id)
        return self._task(await asend(self.configuration, call), call)

    # list

    @staticmethod
    def _list_call(path: str, filters: dict[str, Any] | None) -> Call:
        return Call("list tasks", "GET", path, params=dict(filters or {}))

    def list(self, agent_id: str, filters: dict[str, Any] | None = None) -> list[TasksListItem]:
        """Tasks of an agent, newest first. Filters: user_id, parent_task_id, triggering_agent_id,
        status, internal_status."""
        call = self._list_call(f"/agent-execution/executions/history/{segment(agent_id)}", filters)
        return self._list(send(self.configuration, call), call)

    async def alist(self, agent_id: str, filters: dict[str, Any] | None = None) -> list[TasksListItem]:
        call = self._list_call(f"/agent-execution/executions/history/{segment(agent_id)}", filters)
        return self._list(await asend(self.configuration, call), call)

    def list_user_tasks(self, user_id: str, filters: dict[str, Any] | None = None) -> list[TasksListItem]:
        call = self._list_call(f"/agent-execution/executions/history/user/{segment(user_id)}", filters)
        return self._list(send(self.configuration, call), call)

    async def alist_user_tasks(
        self, user_id: str, filters: dict[str, Any] | None = None
    ) -> list[TasksListItem]:
        call = self._list_call(f"/agent-execution/executions/history/user/{segment(user_id)}", filters)
        return self._list(await asend(self.configuration, call), call)

    # update and stop

    def update(
        self,
        task_id: str,
        tool_call_payload_extension: dict[str, Any] | None = None,
        source: str | None = None,
        status: AgentExecutionStatus | str | None = None,
        last_executed_node_id: str | None = None,
        result: str | None = None,
        internal_status: str | None = None,
    ) -> Task:
        """Change only the given fields; finishing a task (status completed, failed, ...) is final."""
        call = update_call(
            task_id,
            tool_call_payload_extension=tool_call_payload_extension,
            source=source,
            status=status,
            last_executed_node_id=last_executed_node_id,
            result=result,
            internal_status=internal_status,
        )
        return self._task(send(self.configuration, call), call)

    async def aupdate(
        self,
        task_id: str,
        tool_call_payload_extension: dict[str, Any] | None = None,
        source: str | None = None,
        status: AgentExecutionStatus | str | None = None,
        last_executed_node_id: str | None = None,
        result: str | None = None,
        internal_status: str | None = None,
    ) -> Task:
        call = update_call(
            task_id,
            tool_call_payload_extension=tool_call_payload_extension,
            source=source,
            status=status,
            last_executed_node_id=last_executed_node_id,
            result=result,
            internal_status=internal_status,
        )
        return self._task(await asend(self.configuration, call), call)

    def stop(self, task_id: str) -> Task:
        call = stop_call(task_id)
        return self._task(send(self.configuration, call), call)

    async def astop(self, task_id: str) -> Task:
        call = stop_call(task_id)
        return self._task(await asend(self.configuration, call), call)

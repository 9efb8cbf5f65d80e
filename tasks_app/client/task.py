"""Task: one execution of an agent, as the server reports it, with the calls that act on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any, Self
from urllib.parse import quote

from pydantic import Field, PrivateAttr

from tasks_app.client import attachments, stream
from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException
from tasks_app.client.models.activity import AgentActivityThread
from tasks_app.client.models.events import TaskUpdateEvent
from tasks_app.client.models.task import (
    AgentExecutionInput,
    AgentExecutionStatus,
    HumanInTheLoopRequest,
    LLMReasoningEffort,
    OutputFormat,
    PendingECARequest,
    ThinkMode,
    Tokens,
    WireModel,
)
from tasks_app.client.transport import Call, asend, parse, send

INTERNAL_STATUS_MAX = 255


def segment(value: str) -> str:
    """An id as one URL path segment."""
    return quote(str(value), safe="")


def get_call(task_id: str) -> Call:
    return Call("get task", "GET", f"/agent-execution/{segment(task_id)}/status")


def stop_call(task_id: str) -> Call:
    return Call("stop task", "DELETE", f"/agent-execution/{segment(task_id)}")


def check_internal_status(value: str | None) -> None:
    if value is not None and len(value) > INTERNAL_STATUS_MAX:
        raise ModuleException(
            422, f"internal_status: at most {INTERNAL_STATUS_MAX} characters (got {len(value)})"
        )


class Task(WireModel):
    """A task (xpander-wire.md 3.1). Fields are refreshed from the server by reload(), save() and stop()."""

    id: str
    agent_id: str
    organization_id: str
    input: AgentExecutionInput = Field(default_factory=AgentExecutionInput)
    created_at: datetime
    updated_at: datetime | None = None
    status: AgentExecutionStatus | None = AgentExecutionStatus.Pending
    internal_status: str | None = None
    result: str | None = None
    last_executed_node_id: str | None = None
    agent_version: str | None = None
    started_at: datetime | None = None
    paused_at: datetime | None = None
    finished_at: datetime | None = None
    parent_execution: str | None = None
    conversation_id: str | None = None
    conversation_kind: str | None = None
    sub_executions: list[str] = Field(default_factory=list)
    should_update_parent: bool = False
    is_manually_stopped: bool = False
    payload_extension: dict[str, Any] | None = None
    execution_kind: str | None = None
    hitl_request: HumanInTheLoopRequest | None = None
    pending_eca_request: PendingECARequest | None = None
    source: str | None = None
    voice_id: str | None = None
    output_format: OutputFormat | None = None
    output_schema: dict[str, Any] | None = None
    events_streaming: bool = False
    is_orchestration: bool = False
    is_gateway: bool = False
    is_app: bool = False
    background_auth_eligible: bool = False
    additional_context: str | None = None
    tool_call_limit: int | None = None
    instructions_override: str | None = None
    test_run_node_id: str | None = None
    user_oidc_token: str | None = None
    expected_output: str | None = None
    mcp_servers: list[dict[str, Any]] = Field(default_factory=list)
    triggering_agent_id: str | None = None
    title: str | None = None
    think_mode: ThinkMode | None = ThinkMode.Default
    disable_attachment_injection: bool = False
    user_tokens: dict[str, Any] | None = None  # never echoed by the server
    deep_planning: dict[str, Any] | None = None
    must_deep_plan: bool = False
    execution_attempts: int = 1
    return_metrics: bool = False
    llm_model_provider: str | None = None
    llm_model_name: str | None = None
    llm_reasoning_effort: LLMReasoningEffort | None = None
    harness_cli: str | None = None
    permission_mode: str | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    used_tools: list[str] = Field(default_factory=list)
    duration: float | None = None
    turns: int = 1

    _configuration: Configuration | None = PrivateAttr(default=None)
    _media: dict[str, tuple[list[Any], list[str]]] = PrivateAttr(default_factory=dict)

    @property
    def configuration(self) -> Configuration:
        if self._configuration is None:
            self._configuration = Configuration()
        return self._configuration

    @classmethod
    def from_json(cls, data: dict[str, Any], configuration: Configuration, call: Call | None = None) -> Task:
        task = parse(cls, data, call or Call("read task", "GET", ""))
        task._configuration = configuration
        return task

    def _refresh(self, data: Any, call: Call) -> None:
        fresh = Task.from_json(data, self.configuration, call)
        for name in type(self).model_fields:
            setattr(self, name, getattr(fresh, name))
        self._media.clear()

    # ---- loading --------------------------------------------------------------------------------

    @classmethod
    def load(cls, task_id: str, configuration: Configuration | None = None) -> Task:
        """GET the task by id."""
        cfg = configuration or Configuration()
        call = get_call(task_id)
        return cls.from_json(send(cfg, call), cfg, call)

    @classmethod
    async def aload(cls, task_id: str, configuration: Configuration | None = None) -> Task:
        cfg = configuration or Configuration()
        call = get_call(task_id)
        return cls.from_json(await asend(cfg, call), cfg, call)

    def reload(self) -> None:
        """Refresh every field from the server (returns None, as upstream)."""
        call = get_call(self.id)
        self._refresh(send(self.configuration, call), call)

    async def areload(self) -> Self:
        call = get_call(self.id)
        self._refresh(await asend(self.configuration, call), call)
        return self

    # ---- changing -------------------------------------------------------------------------------

    def _save_call(self) -> Call:
        check_internal_status(self.internal_status)
        return Call(
            "save task",
            "PATCH",
            f"/agent-execution/{segment(self.id)}/update",
            json=self.model_dump(mode="json"),
        )

    def save(self) -> Self:
        """Send the whole task (internal_status included) and take the server's answer."""
        call = self._save_call()
        self._refresh(send(self.configuration, call), call)
        return self

    async def asave(self) -> Self:
        call = self._save_call()
        self._refresh(await asend(self.configuration, call), call)
        return self

    def set_status(self, status: AgentExecutionStatus | str, result: str | None = None) -> Self:
        self.status = AgentExecutionStatus(status)
        if result is not None:
            self.result = result
        return self.save()

    async def aset_status(self, status: AgentExecutionStatus | str, result: str | None = None) -> Self:
        self.status = AgentExecutionStatus(status)
        if result is not None:
            self.result = result
        return await self.asave()

    def stop(self) -> Self:
        """Stop the task; a task that already finished is a 409 ModuleException."""
        call = stop_call(self.id)
        self._refresh(send(self.configuration, call), call)
        return self

    async def astop(self) -> Self:
        call = stop_call(self.id)
        self._refresh(await asend(self.configuration, call), call)
        return self

    # ---- events and activity --------------------------------------------------------------------

    def _cursor(self) -> stream.Cursor:
        cfg = self.configuration
        return stream.Cursor(cfg, self.id, lambda data: Task.from_json(data, cfg))

    def events(self) -> Iterator[TaskUpdateEvent]:
        """Yield the task's events as they happen, from its first; ends after task_finished."""
        return stream.iter_events(self._cursor())

    def aevents(self) -> AsyncIterator[TaskUpdateEvent]:
        return stream.aiter_events(self._cursor())

    def _activity_call(self) -> Call:
        return Call("get activity log", "GET", f"/activity/{segment(self.agent_id)}/{segment(self.id)}")

    def get_activity_log(self) -> AgentActivityThread:
        """Messages, tool calls, reasoning, sub-agent triggers and auth steps, oldest first."""
        call = self._activity_call()
        return parse(AgentActivityThread, send(self.configuration, call), call)

    async def aget_activity_log(self) -> AgentActivityThread:
        call = self._activity_call()
        return parse(AgentActivityThread, await asend(self.configuration, call), call)

    # ---- files ----------------------------------------------------------------------------------

    def _plan(self) -> attachments.Plan:
        return attachments.Plan.of(self.input, self.disable_attachment_injection)

    def get_human_readable_files(self) -> list[dict[str, str]]:
        """[{url, content}] for text-like files and documents (fetched each call, as upstream)."""
        plan = self._plan()
        urls = [] if plan.disable_injection else plan.of_category("readable", "document")
        return attachments.readable_files(plan, attachments.fetch_many(urls, attachments.READABLE_MAX_BYTES))

    async def aget_human_readable_files(self) -> list[dict[str, str]]:
        plan = self._plan()
        urls = [] if plan.disable_injection else plan.of_category("readable", "document")
        results = await attachments.afetch_many(urls, attachments.READABLE_MAX_BYTES)
        return attachments.readable_files(plan, results)

    def get_images(self) -> list[Any]:
        """The task's images (PNG, JPEG, GIF, WEBP up to 5 MB), fetched once and kept."""
        if "images" not in self._media:
            urls, notes = attachments.image_urls(self._plan())
            found, more = attachments.images(urls, attachments.fetch_many(urls, attachments.IMAGE_MAX_BYTES))
            self._media["images"] = (found, notes + more)
        return list(self._media["images"][0])

    async def aget_images(self) -> list[Any]:
        if "images" not in self._media:
            urls, notes = attachments.image_urls(self._plan())
            results = await attachments.afetch_many(urls, attachments.IMAGE_MAX_BYTES)
            found, more = attachments.images(urls, results)
            self._media["images"] = (found, notes + more)
        return list(self._media["images"][0])

    def get_files(self) -> list[Any]:
        """The task's PDFs as files, fetched once and kept."""
        if "files" not in self._media:
            urls = self._plan().of_category("pdf")
            self._media["files"] = attachments.pdf_files(
                urls, attachments.fetch_many(urls, attachments.PDF_MAX_BYTES)
            )
        return list(self._media["files"][0])

    async def aget_files(self) -> list[Any]:
        if "files" not in self._media:
            urls = self._plan().of_category("pdf")
            results = await attachments.afetch_many(urls, attachments.PDF_MAX_BYTES)
            self._media["files"] = attachments.pdf_files(urls, results)
        return list(self._media["files"][0])

    def _message(self, readable: list[dict[str, str]], with_timestamp: bool) -> str:
        plan = self._plan()
        notes = plan.notes + [note for _, media_notes in self._media.values() for note in media_notes]
        return attachments.message(
            self.input.text, plan.urls, readable, notes, self.created_at, with_timestamp
        )

    def to_message(self, retry_count: int = 0, with_timestamp: bool = True) -> str:
        """The prompt for a model: text, file URLs, readable contents, notes and the UTC timestamp.
        `retry_count` is accepted for the official signature; it only matters for deep planning."""
        return self._message(self.get_human_readable_files(), with_timestamp)

    async def ato_message(self, retry_count: int = 0, with_timestamp: bool = True) -> str:
        return self._message(await self.aget_human_readable_files(), with_timestamp)

"""A light Python client for this server's task API, with the interface of the xpander SDK's Tasks module.

Needs only httpx and pydantic (no Django): `from tasks_app.client import Tasks, Task, User`.
See docs/client.md.
"""

from tasks_app.client.agents import Agent, Agents
from tasks_app.client.backend import Backend
from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException
from tasks_app.client.models.activity import (
    AgentActivityThread,
    AgentActivityThreadAuth,
    AgentActivityThreadMessage,
    AgentActivityThreadOtherEntry,
    AgentActivityThreadReasoning,
    AgentActivityThreadSubAgentTrigger,
    AgentActivityThreadToolCall,
)
from tasks_app.client.models.agent import AgentGraph, AgentGraphItem, AgentGraphItemType, MCPServerDetails
from tasks_app.client.models.events import (
    TaskUpdateEvent,
    TaskUpdateEventType,
    ToolCallRequest,
    ToolCallResult,
)
from tasks_app.client.models.media import File, Image
from tasks_app.client.models.task import (
    AgentExecutionInput,
    AgentExecutionStatus,
    LLMReasoningEffort,
    OutputFormat,
    ThinkMode,
    User,
)
from tasks_app.client.task import Task
from tasks_app.client.tasks import Tasks, TasksListItem

__all__ = [
    "Agent",
    "AgentActivityThread",
    "AgentActivityThreadAuth",
    "AgentActivityThreadMessage",
    "AgentActivityThreadOtherEntry",
    "AgentActivityThreadReasoning",
    "AgentActivityThreadSubAgentTrigger",
    "AgentActivityThreadToolCall",
    "AgentExecutionInput",
    "AgentExecutionStatus",
    "AgentGraph",
    "AgentGraphItem",
    "AgentGraphItemType",
    "Agents",
    "Backend",
    "Configuration",
    "File",
    "Image",
    "LLMReasoningEffort",
    "MCPServerDetails",
    "ModuleException",
    "OutputFormat",
    "Task",
    "TaskUpdateEvent",
    "TaskUpdateEventType",
    "Tasks",
    "TasksListItem",
    "ThinkMode",
    "ToolCallRequest",
    "ToolCallResult",
    "User",
]

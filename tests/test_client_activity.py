"""task.get_activity_log(): typed entries a user can analyse, e.g. to count tool usage."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks_app.client import Tasks
from tasks_app.client.models.activity import (
    AgentActivityThread,
    AgentActivityThreadAuth,
    AgentActivityThreadMessage,
    AgentActivityThreadReasoning,
    AgentActivityThreadSubAgentTrigger,
    AgentActivityThreadToolCall,
)
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def run_a_session(setup, task) -> None:
    """What a worker does for one research task: think, call tools, delegate, sign in, answer."""
    setup.push(
        task,
        ("think", {"title": "Plan", "thought": "Search first, then read the top hit."}),
        ("tool_call_request", {"tool_name": "web_search", "payload": {"q": "sales 2024"}}),
        ("tool_call_result", {"tool_name": "web_search", "payload": {"q": "sales 2024"}, "result": ["a", "b"]}),
        ("tool_call_result", {"tool_name": "fetch_page", "payload": {"url": "a"}, "result": "403", "is_error": True}),
        ("tool_call_result", {"tool_name": "web_search", "payload": {"q": "sales 2024 q4"}, "result": ["c"]}),
        ("analyze", "The numbers went up."),
        ("sub_agent_trigger", {"agent_id": "writer-1", "query": "Draft the summary", "reasoning": {"title": "Delegate"}}),
        ("auth_event", {"type": "login_required", "data": {"url": "https://login.example/x",
                                                           "server_url": "https://mcp.example/mcp",
                                                           "server_name": "Example"}}),
        ("chunk", "Sales rose."),
    )  # fmt: skip
    setup.finish(task, "Sales rose 12%.")


def test_the_activity_log_is_typed(setup):
    task = Tasks(setup.configuration).create(setup.agent["id"], prompt="How did sales do?")
    run_a_session(setup, task)
    log = task.get_activity_log()
    assert isinstance(log, AgentActivityThread) and log.id == task.id
    kinds = [type(m).__name__ for m in log.messages]
    assert kinds == [
        "AgentActivityThreadMessage",
        "AgentActivityThreadReasoning",
        "AgentActivityThreadToolCall",
        "AgentActivityThreadToolCall",
        "AgentActivityThreadToolCall",
        "AgentActivityThreadReasoning",
        "AgentActivityThreadSubAgentTrigger",
        "AgentActivityThreadAuth",
        "AgentActivityThreadMessage",
    ]
    messages = [m for m in log.messages if isinstance(m, AgentActivityThreadMessage)]
    assert [(m.role, m.content.text) for m in messages] == [
        ("user", "How did sales do?"),
        ("agent", "Sales rose 12%."),
    ]
    thoughts = [(m.type, m.thought) for m in log.messages if isinstance(m, AgentActivityThreadReasoning)]
    assert thoughts == [
        ("think", "Search first, then read the top hit."),
        ("analyze", "The numbers went up."),
    ]
    [trigger] = [m for m in log.messages if isinstance(m, AgentActivityThreadSubAgentTrigger)]
    assert (trigger.agent_id, trigger.query, trigger.reasoning.title) == (
        "writer-1",
        "Draft the summary",
        "Delegate",
    )
    [auth] = [m for m in log.messages if isinstance(m, AgentActivityThreadAuth)]
    assert auth.type == "login_required" and auth.data.server_name == "Example"
    assert auth.data.url == "https://login.example/x"


async def test_tool_usage_can_be_counted(setup):
    task = await Tasks(setup.configuration).acreate(setup.agent["id"], prompt="How did sales do?")
    run_a_session(setup, task)
    log = await task.aget_activity_log()
    calls = [m for m in log.messages if isinstance(m, AgentActivityThreadToolCall)]
    assert Counter(c.tool_name for c in calls) == {"web_search": 2, "fetch_page": 1}
    assert [c.tool_name for c in calls if c.is_error] == ["fetch_page"]
    assert [c.payload for c in calls if c.tool_name == "web_search"] == [
        {"q": "sales 2024"},
        {"q": "sales 2024 q4"},
    ]
    assert calls[0].result == ["a", "b"]


def test_entries_are_routed_as_the_wire_contract_describes():
    base = {"id": "e", "created_at": "2025-01-01T00:00:00Z"}
    log = AgentActivityThread.model_validate(
        {
            **base,
            "messages": [
                {**base, "role": "user", "content": {"text": "hi"}, "type": "message"},
                {**base, "role": "assistant", "content": {"text": "not a role upstream knows"}},
                {**base, "tool_name": "t", "result": 1},  # no payload key
                {**base, "type": "think", "title": "", "confidence": 1, "thought": "x"},
                {**base, "agent_id": "a", "reasoning": {}},
                {**base, "reasoning": "why", "action": "create_execution", "created_execution_id": "t2"},
                {**base, "action": "brand_new_card", "anything": [1, 2]},
            ],
        }
    )
    kinds = [type(m).__name__ for m in log.messages]
    assert kinds == [
        "AgentActivityThreadMessage",
        "AgentActivityThreadOtherEntry",
        "AgentActivityThreadOtherEntry",
        "AgentActivityThreadReasoning",
        "AgentActivityThreadSubAgentTrigger",
        "AgentActivityThreadGatewayCreateExecution",
        "AgentActivityThreadOtherEntry",
    ]
    assert log.messages[-1].anything == [1, 2]

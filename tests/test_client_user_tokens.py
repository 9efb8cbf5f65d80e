"""MCP user tokens: found through Agents().get(...).graph, sent with create, never echoed back."""

from __future__ import annotations

import json

import pytest

from tasks_app.client import Agents, ModuleException, Tasks, User
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live

GRAPH = [
    {
        "id": "gi-github",
        "type": "mcp",
        "name": "GitHub",
        "settings": {"mcp_settings": {"url": "https://mcp.github.example/mcp", "auth_type": "oauth2"}},
    },
    {
        "id": "gi-jira",
        "type": "mcp",
        "name": "Jira",
        "settings": {"mcp_settings": {"url": "https://mcp.jira.example/mcp"}},
    },
]


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server, graph=GRAPH)


def test_agents_show_the_mcp_graph_items(setup, monkeypatch):
    setup.use_environment(monkeypatch)
    agent = Agents().get(setup.agent["id"])
    mcp = [item for item in agent.graph.items if item.type == "mcp"]
    assert [item.id for item in mcp] == ["gi-github", "gi-jira"]
    assert [item.settings.mcp_settings.url for item in mcp] == [
        "https://mcp.github.example/mcp",
        "https://mcp.jira.example/mcp",
    ]
    assert agent.name == setup.agent["name"]


async def test_aget_and_an_unknown_agent(setup):
    agents = Agents(setup.configuration)
    agent = await agents.aget(setup.agent["id"])
    assert len(agent.graph.mcp_items()) == 2
    with pytest.raises(ModuleException) as caught:
        await agents.aget("no-such-agent")
    assert caught.value.status_code == 404
    assert caught.value.description == "Agent no-such-agent not found"


def test_user_tokens_are_used_but_never_echoed(setup):
    agent = Agents(setup.configuration).get(setup.agent["id"])
    tokens = {item.id: f"tok-{item.id}-s3cr3t" for item in agent.graph.mcp_items()}
    task = Tasks(setup.configuration).create(
        agent_id=agent.id,
        prompt="List my open issues",
        user_details=User(id="user-7", email="seven@example.com"),
        user_tokens=tokens,
        events_streaming=True,
    )
    assert task.user_tokens is None
    assert task.reload() is None and task.user_tokens is None
    raw = json.dumps(setup.raw(task))
    assert not any(token in raw for token in tokens.values())

    # The server knows the tokens: a worker's event that leaks one is masked before it is stored.
    setup.push(
        task, ("tool_call_result", {"tool_name": "issues", "payload": {}, "result": tokens["gi-jira"]})
    )
    setup.finish(task)
    results = [e.data for e in task.events() if e.type == "tool_call_result"]
    assert results == [{"tool_name": "issues", "payload": {}, "result": "REDACTED"}]
    [call] = [m for m in task.get_activity_log().messages if getattr(m, "tool_name", None) == "issues"]
    assert call.result == "REDACTED"

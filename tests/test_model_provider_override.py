"""A task's llm_model_provider override never carries the agent's stored model key to another endpoint."""

from __future__ import annotations

import asyncio

import pytest

from console.models import Agent
from tasks_app.models import Task
from tasks_app.runtime import llm


@pytest.fixture
def openai_agent(alice) -> Agent:
    body = {"name": "Keyed", "model_provider": "openai", "model_api_key": "sk-agent-secret"}
    r = alice.post("/api/v1/agents", body)
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def test_it_uses_the_agents_key_for_its_own_provider(openai_agent):
    task = Task(agent=openai_agent, organization=openai_agent.organization, llm_model_provider="openai")
    assert llm.resolve(task, openai_agent)[3] == "sk-agent-secret"


def test_it_does_not_send_the_agents_key_to_another_provider(openai_agent, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    task = Task(agent=openai_agent, organization=openai_agent.organization, llm_model_provider="anthropic")
    with pytest.raises(llm.ModelConfigError, match="only sent to its own provider"):
        llm.resolve(task, openai_agent)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-operator-anthropic")
    assert llm.resolve(task, openai_agent)[3] == "sk-operator-anthropic"


def test_it_does_not_send_the_agents_key_to_a_local_ollama(openai_agent):
    task = Task(agent=openai_agent, organization=openai_agent.organization, llm_model_provider="ollama")
    _, _, base_url, key = llm.resolve(task, openai_agent)
    assert base_url == llm.OLLAMA_DEFAULT and key is None


# -- one model object per client and model name ---------------------------------------------------


def test_runs_of_one_endpoint_share_a_model_and_other_endpoints_do_not(openai_agent):
    again = Agent.objects.get(pk=openai_agent.pk)  # another run reads its own row

    def build(agent: Agent, **task: str):
        return llm.build_model(Task(agent=agent, organization_id=agent.organization_id, **task), agent)

    async def check() -> None:
        model = build(openai_agent)
        assert build(again) is model
        assert model.model_name == openai_agent.model_name
        assert build(again, llm_model_name="gpt-other").model_name == "gpt-other"
        again.set_model_api_key("sk-rotated")  # a new key is a new client, so a model of its own
        rotated = build(again)
        assert rotated is not model and rotated.client.api_key == "sk-rotated"
        assert model.client.api_key == "sk-agent-secret"

    asyncio.run(check())


def test_the_kept_models_are_bounded(openai_agent, monkeypatch):
    monkeypatch.setattr(llm, "MODELS_KEPT", 3)

    async def build_six() -> None:
        for i in range(6):
            task = Task(
                agent=openai_agent, organization_id=openai_agent.organization_id, llm_model_name=f"m{i}"
            )
            llm.build_model(task, openai_agent)

    asyncio.run(build_six())
    assert len(llm._models) <= 3


def test_runs_without_tools_of_their_own_share_a_pydantic_agent_per_model_and_instructions(
    openai_agent, monkeypatch
):
    from tasks_app.runtime import runner

    monkeypatch.setattr(runner, "AGENTS_KEPT", 2)

    async def check() -> None:
        model = llm.build_model(
            Task(agent=openai_agent, organization_id=openai_agent.organization_id), openai_agent
        )
        first = runner._pydantic_agent(model, "Answer briefly.", [])
        assert runner._pydantic_agent(model, "Answer briefly.", []) is first
        assert first.model is model
        other = runner._pydantic_agent(model, "Answer at length.", [])
        assert other is not first
        tool = runner._pydantic_agent(model, "Answer briefly.", [tool_fn])
        assert tool is not first and tool is not runner._pydantic_agent(model, "Answer briefly.", [tool_fn])
        runner._pydantic_agent(model, "A third.", [])
        assert len(runner._agents) <= 2

    asyncio.run(check())


def tool_fn() -> str:
    """A tool (closing over a run's task, as a sub-agent's does)."""
    return "tool"

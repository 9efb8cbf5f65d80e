"""Sub-agents as tools: each agent in the graph answers through a child task the run waits for."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async

from console.models import Agent, GraphItem
from tasks_app import actions, events
from tasks_app.models import ActivityKind, Status, Task
from tasks_app.runtime.mapping import ToolCalls, slug
from tasks_app.schemas import TaskCreateIn


def sub_agent_tool(
    parent: Task, tokens: dict[str, Any], item: GraphItem, sink: Any, sub_agent: Agent, calls: ToolCalls
) -> Any:
    """A tool that delegates to another agent through a child task, and returns its result."""
    from pydantic_ai import Tool

    name = f"ask_{slug(sub_agent.unique_name or sub_agent.name)}"
    calls.items[name] = item.key

    async def delegate(query: str) -> str:
        child = await actions.acreate_task(
            actions.Actor(parent.organization_id, actions.SYSTEM),
            sub_agent.id,
            TaskCreateIn.model_validate(
                {
                    "input": {"text": query, "user": parent.input_user},
                    "events_streaming": True,
                    "user_tokens": tokens or None,
                    "triggering_agent_id": parent.agent_id,
                }
            ),
            parent=parent,
        )
        reasoning = {"title": f"Delegating to {sub_agent.name}", "description": query[:500]}
        sink.event(
            "sub_agent_trigger",
            {"agent_id": sub_agent.id, "query": query, "sub_task_id": child.id, "reasoning": reasoning},
            (
                ActivityKind.SUB_AGENT_TRIGGER,
                {"agent_id": sub_agent.id, "query": query, "reasoning": reasoning, "sub_task_id": child.id},
            ),
        )
        await events.wait_until_finished(child, poll=2.0)
        done = await sync_to_async(Task.objects.get)(pk=child.id)
        if done.status != Status.COMPLETED:
            return f"The sub-agent {sub_agent.name} ended {done.status}: {done.result or ''}"
        return done.result or ""

    return Tool(
        delegate, name=name, description=f"Ask the agent {sub_agent.name!r}: {sub_agent.description or ''}"
    )


async def tools(
    task: Task, items: list[GraphItem], tokens: dict[str, Any], sink: Any, calls: ToolCalls
) -> list[Any]:
    """One tool per agent of the graph (agents of the task's organization only)."""
    if not any(i.type == "agent" for i in items):
        return []  # no sub-agents: no trip to the database
    sub_agents = {
        a.id: a
        for a in await sync_to_async(list)(
            Agent.objects.filter(
                pk__in=[i.item_id for i in items if i.type == "agent"],
                organization_id=task.organization_id,
            )
        )
    }
    return [
        sub_agent_tool(task, tokens, i, sink, sub_agents[i.item_id], calls)
        for i in items
        if i.type == "agent" and i.item_id in sub_agents
    ]

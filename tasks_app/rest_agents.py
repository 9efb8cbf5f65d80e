"""/api/v1/agents: agent administration over REST with the organization's API key."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router

from console import agents
from console.models import Agent
from tasks_app import openapi as doc
from tasks_app import wire
from tasks_app.rest import json_body, parse

router = Router()


def _agent_json(agent: Agent) -> dict:
    out = wire.agent_json(agent)
    out["framework"] = agent.framework
    out["model_base_url"] = agent.model_base_url or None
    out["instructions"] = agent.instructions
    out["max_run_seconds"] = (agent.settings or {}).get("max_run_seconds")
    return out


@router.get("", response=doc.responses(list[doc.AdminAgentOut]))
def list_agents(request: HttpRequest) -> HttpResponse:
    rows = Agent.objects.filter(organization_id=request.auth.organization_id).prefetch_related("graph_items")
    return JsonResponse([_agent_json(a) for a in rows.order_by("name")], safe=False)


@router.post(
    "",
    response=doc.responses(doc.AdminAgentOut, *doc.BODY, 403, 409, status=201),
    openapi_extra=doc.body(agents.AgentIn),
)
def create_agent(request: HttpRequest) -> HttpResponse:
    data = parse(agents.AgentIn, json_body(request))
    agent = agents.create_agent(request.auth, data)
    return JsonResponse(_agent_json(agent), status=201)


@router.get("/{agent_id}", response=doc.responses(doc.AdminAgentOut))
def get_agent(request: HttpRequest, agent_id: str) -> HttpResponse:
    return JsonResponse(_agent_json(agents.get_agent(request.auth, agent_id)))


@router.patch(
    "/{agent_id}",
    response=doc.responses(doc.AdminAgentOut, *doc.BODY, 403, 409),
    openapi_extra=doc.body(agents.AgentIn),
)
def update_agent(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = agents.get_agent(request.auth, agent_id)
    raw = json_body(request)
    merged = {"name": agent.name, **raw} if isinstance(raw, dict) else raw
    data = parse(agents.AgentIn, merged)
    agent = agents.update_agent(request.auth, agent, raw, data)
    return JsonResponse(_agent_json(agent))


@router.delete("/{agent_id}", response=doc.responses(None, 403, 409, status=204))
def delete_agent(request: HttpRequest, agent_id: str) -> HttpResponse:
    agents.delete_agent(request.auth, agents.get_agent(request.auth, agent_id))
    return HttpResponse(status=204)

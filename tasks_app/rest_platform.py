"""Routes the official SDK's Backend and external workers call beside the Tasks module.

Reporting tasks that ran elsewhere, their metrics, and handing an MCP server's user token to an
external worker (`get_token`, xpander-wire.md section 6). Every token handed out is audited.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Router

from console import oauth, vault
from console.errors import Invalid
from tasks_app import actions, wire
from tasks_app import openapi as doc
from tasks_app.rest import json_body, parse
from tasks_app.schemas import McpServerDetailsIn, MetricsReportIn, TaskReportIn

router = Router()


@router.post(
    "/agent-execution/{agent_id}/report_task",
    response=doc.responses(doc.TaskOut, *doc.BODY, 403, 409),
    openapi_extra=doc.body(TaskReportIn),
)
def report_task(request: HttpRequest, agent_id: str) -> HttpResponse:
    data = parse(TaskReportIn, json_body(request))
    return JsonResponse(wire.task_json(actions.report_external_task(request.auth, agent_id, data)))


@router.post(
    "/agents-metrics/{agent_id}/execution",
    response=doc.responses(doc.MetricsOut, *doc.BODY, 403),
    openapi_extra=doc.body(MetricsReportIn),
)
def report_metrics(request: HttpRequest, agent_id: str) -> HttpResponse:
    data = parse(MetricsReportIn, json_body(request))
    task = actions.record_metrics(request.auth, agent_id, data)
    return JsonResponse({"task_id": task.id, "stored": True})


@router.post(
    "/mcp_auth/{agent_id}/{user_id}/get_token",
    response=doc.responses(doc.TokenResponseOut, *doc.BODY, 403),
    openapi_extra=doc.merge(
        doc.body(McpServerDetailsIn),
        doc.query(
            ("generate_login_url", {"type": "string"}, "true: answer login_required with a sign-in link"),
            ("is_app", {"type": "string"}, "Sent by the SDK; ignored"),
            ("force_refresh", {"type": "string"}, "Sent by the SDK; ignored"),
            ("execution_id", {"type": "string"}, "Sent by the SDK; ignored"),
        ),
    ),
)
def get_token(request: HttpRequest, agent_id: str, user_id: str) -> HttpResponse:
    actor = request.auth
    agent = actions.get_agent(actor, agent_id)
    raw = json_body(request)
    if not isinstance(raw, dict):
        raise Invalid("body", "must be the MCP server details object")
    parse(McpServerDetailsIn, raw)  # the fields the vault reads must have their wire types
    user_id = user_id.removeprefix(f"{agent.id}_")  # share_user_token_across_other_agents=false form
    owner = vault.resolve(actor.organization_id, user_id)
    owner = owner if actor.may_use(owner) else vault.NOBODY  # refused: answered as "no token"
    flag = request.GET.get("generate_login_url")  # absent: a caller outside the SDK's sign-in loop
    generate = None if flag is None else flag.lower() == "true"
    response = vault.get_token_response(
        organization_id=actor.organization_id,
        api_key_id=actor.api_key_id,
        agent=agent,
        user_id=user_id,
        owner=owner,
        details=raw,
        login_url=oauth.login_url_for(
            actor.organization_id, owner, agent, raw, generate, f"{request.scheme}://{request.get_host()}"
        ),
    )
    return JsonResponse(response)

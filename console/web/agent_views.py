"""/agents/: list, create, edit, delete agents and their graph (admins).

The forms only gather the fields into the body `POST /api/v1/agents` takes; that body goes through
the same `AgentIn` validation and the same console.agents functions as the REST route, and their
errors come back next to the form field they name. Secrets are write-only: a blank secret field
keeps the stored value, and a page never shows one (only "set" or "not set").
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import messages
from django.forms import formset_factory
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console import agents
from console.access import Actor
from console.errors import Conflict, Invalid
from console.models import Agent, Framework, GraphItemType, ModelProvider, Role
from console.web.guard import member_page
from tasks_app.actions import workers as actions_workers
from tasks_app.rest import parse

AUTH_TYPES = [("none", "None"), ("api_key", "API key or bearer token"), ("oauth2", "OAuth2")]
_GRAPH_FIELD = re.compile(r"^graph\[(\d+)\]\.?(.*)$")


class AgentForm(forms.Form):
    name = forms.CharField(label="Name", max_length=200)
    unique_name = forms.CharField(
        label="Unique name",
        max_length=200,
        required=False,
        help_text="Letters, digits, '_', '.', '-'; empty: from the name.",
    )
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea({"rows": 2}))
    instructions = forms.CharField(label="Instructions", required=False, widget=forms.Textarea({"rows": 6}))
    framework = forms.ChoiceField(
        label="Runs on",
        choices=[("builtin", "This server (built-in runtime)"), ("external", "Your own worker (SDK)")],
    )
    model_provider = forms.ChoiceField(label="Model provider", choices=ModelProvider.choices)
    model_name = forms.CharField(label="Model name", max_length=200, initial="gpt-4o-mini")
    model_base_url = forms.CharField(
        label="Model base URL", max_length=500, required=False, help_text="Empty: the provider's default."
    )
    model_api_key = forms.CharField(
        label="Model API key",
        required=False,
        max_length=8192,
        strip=True,
        widget=forms.PasswordInput({"autocomplete": "off"}),
    )
    clear_model_api_key = forms.BooleanField(label="Remove the stored model API key", required=False)
    tool_call_limit = forms.IntegerField(
        label="Tool calls per turn",
        required=False,
        min_value=0,
        max_value=10_000,
        help_text="Empty: the server's default.",
    )
    max_run_seconds = forms.IntegerField(
        label="Maximum run time (seconds)",
        required=False,
        min_value=1,
        max_value=86_400,
        help_text="A run past it is stopped. Empty: the server's default.",
    )
    sub_agents = forms.MultipleChoiceField(
        label="Sub-agents",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Agents this one may delegate to.",
    )

    def __init__(self, organization_id: str, agent: Agent | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        others = Agent.objects.filter(organization_id=organization_id).order_by("name")
        if agent is not None:
            others = others.exclude(pk=agent.pk)
        self.fields["sub_agents"].choices = [(a.id, a.name) for a in others]
        has_key = agent is not None and agent.has_model_api_key
        self.fields["model_api_key"].help_text = (
            "Set. Leave empty to keep it; type a new one to replace it." if has_key else "Not set."
        )
        if not has_key:
            del self.fields["clear_model_api_key"]


class McpForm(forms.Form):
    """One MCP server of the graph; `id` is the graph item id SDK users key tokens by."""

    id = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    name = forms.CharField(label="Name", max_length=200, required=False)
    url = forms.CharField(label="URL", max_length=2048, required=False)
    transport = forms.ChoiceField(
        label="Transport",
        choices=[("streamable-http", "Streamable HTTP"), ("sse", "SSE")],
        initial="streamable-http",
    )
    auth_type = forms.ChoiceField(label="Authentication", choices=AUTH_TYPES, initial="none")
    api_key = forms.CharField(
        label="API key or token",
        required=False,
        max_length=8192,
        widget=forms.PasswordInput({"autocomplete": "off"}),
    )
    client_id = forms.CharField(label="OAuth2 client ID", required=False, max_length=500)
    client_secret = forms.CharField(
        label="OAuth2 client secret",
        required=False,
        max_length=8192,
        widget=forms.PasswordInput({"autocomplete": "off"}),
    )
    remove = forms.BooleanField(label="Remove this server", required=False)

    @property
    def blank(self) -> bool:
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        return not data.get("id") and not data.get("url")


McpFormSet = formset_factory(McpForm, extra=1, max_num=200)


def _mcp_initial(agent: Agent | None) -> list[dict[str, Any]]:
    if agent is None:
        return []
    rows = []
    for item in agent.graph_items.filter(type=GraphItemType.MCP):
        mcp = item.mcp_settings
        rows.append(
            {
                "id": item.key,
                "name": item.name,
                "url": mcp.get("url", ""),
                "transport": mcp.get("transport", "streamable-http"),
                "auth_type": mcp.get("auth_type", "none"),
                "client_id": mcp.get("client_id", ""),
            }
        )
    return rows


def _body(form: AgentForm, mcp_forms: list[McpForm], agent: Agent | None) -> tuple[dict[str, Any], list[int]]:
    """The REST body the forms describe, and which MCP form each graph entry came from."""
    data = form.cleaned_data
    body: dict[str, Any] = {
        "name": data["name"],
        "unique_name": data["unique_name"] or None,
        "description": data["description"],
        "instructions": data["instructions"],
        "framework": data["framework"],
        "model_provider": data["model_provider"],
        "model_name": data["model_name"],
        "model_base_url": data["model_base_url"] or None,
        "tool_call_limit": data["tool_call_limit"],
        "max_run_seconds": data["max_run_seconds"],
    }
    if data.get("model_api_key"):
        body["model_api_key"] = data["model_api_key"]
    elif data.get("clear_model_api_key"):
        body["model_api_key"] = None
    previous = {i.key: i for i in agent.graph_items.all()} if agent is not None else {}
    graph: list[dict[str, Any]] = []
    origin: list[int] = []
    for index, mcp_form in enumerate(mcp_forms):
        row = mcp_form.cleaned_data
        if mcp_form.blank or row.get("remove"):
            continue
        old = previous.get(row.get("id") or "")
        # Keep settings the form does not show (allowed tools, scopes...), as the REST API would.
        settings = {**(old.mcp_settings if old else {}), "url": row["url"], "transport": row["transport"]}
        settings["auth_type"] = row["auth_type"]
        settings["client_id"] = row["client_id"] or None
        for secret in ("api_key", "client_secret"):
            if row.get(secret):
                settings[secret] = row[secret]
        item: dict[str, Any] = {
            "type": "mcp",
            "name": row["name"] or None,
            "settings": {"mcp_settings": settings},
        }
        if row.get("id"):
            item["id"] = row["id"]
        graph.append(item)
        origin.append(index)
    keys_by_agent = {i.item_id: i.key for i in previous.values() if i.type == GraphItemType.AGENT}
    for agent_id in data["sub_agents"]:
        item = {"type": "agent", "item_id": agent_id}
        if agent_id in keys_by_agent:
            item["id"] = keys_by_agent[agent_id]
        graph.append(item)
        origin.append(-1)
    body["graph"] = graph
    return body, origin


def _place_error(form: AgentForm, mcp_forms: list[McpForm], origin: list[int], exc: Invalid) -> None:
    """Put an error of the agent API next to the form field it names."""
    field = exc.extra.get("field", "")
    message = exc.message.split(": ", 1)[-1]
    match = _GRAPH_FIELD.match(field)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        source = origin[index] if index < len(origin) else -1
        if source < 0:
            form.add_error("sub_agents", message)
            return
        name = rest.rsplit(".", 1)[-1]
        mcp_forms[source].add_error(name if name in mcp_forms[source].fields else None, message)
        return
    name = field.split(".")[0].split("[")[0]
    form.add_error(name if name in form.fields else None, message)


def _save(request: HttpRequest, agent: Agent | None) -> tuple[Agent | None, AgentForm, Any]:
    form = AgentForm(request.actor.organization_id, agent, request.POST)
    formset = McpFormSet(request.POST, prefix="mcp")
    if not (form.is_valid() and formset.is_valid()):
        return None, form, formset
    body, origin = _body(form, list(formset.forms), agent)
    try:
        data = parse(agents.AgentIn, body)  # the validation of POST /api/v1/agents
        if agent is None:
            return agents.create_agent(request.actor, data), form, formset
        return agents.update_agent(request.actor, agent, body, data), form, formset
    except Invalid as exc:
        _place_error(form, list(formset.forms), origin, exc)
    except Conflict as exc:
        form.add_error("unique_name", exc.message)
    return None, form, formset


def _edit_context(
    agent: Agent | None, form: AgentForm, formset: Any, actor: Actor | None = None
) -> dict[str, Any]:
    sub_items, workers = [], []
    if agent is not None:
        items = list(agent.graph_items.filter(type=GraphItemType.AGENT))
        names = dict(Agent.objects.filter(pk__in=[i.item_id for i in items]).values_list("id", "name"))
        sub_items = [{"name": names.get(i.item_id, i.item_id), "key": i.key} for i in items]
        if actor is not None and agent.framework == Framework.EXTERNAL:  # its live @on_task workers
            workers = actions_workers.live_workers(actor, agent.id)
    return {
        "nav": "agents",
        "agent": agent,
        "form": form,
        "formset": formset,
        "sub_items": sub_items,
        "workers": workers,
    }


@member_page(role=Role.ADMIN)
@require_GET
def agent_list(request: HttpRequest) -> HttpResponse:
    rows = (
        Agent.objects.filter(organization_id=request.actor.organization_id)
        .prefetch_related("graph_items")
        .order_by("name")
    )
    return render(request, "admin_pages/agents.html", {"nav": "agents", "agents": rows})


@member_page(role=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def agent_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        agent, form, formset = _save(request, None)
        if agent is not None:
            messages.success(request, f"Agent {agent.name} created.")
            return redirect(f"/agents/{agent.id}/")
        return render(request, "admin_pages/agent_edit.html", _edit_context(None, form, formset), status=400)
    form = AgentForm(
        request.actor.organization_id, None, initial={"framework": "builtin", "model_provider": "openai"}
    )
    formset = McpFormSet(prefix="mcp")
    return render(request, "admin_pages/agent_edit.html", _edit_context(None, form, formset))


@member_page(role=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def agent_edit(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = agents.get_agent(request.actor, agent_id)
    if request.method == "POST":
        saved, form, formset = _save(request, agent)
        if saved is not None:
            messages.success(request, f"Agent {saved.name} saved.")
            return redirect(f"/agents/{saved.id}/")
        agent.refresh_from_db()  # the failed save may have changed the instance in memory
        return render(
            request,
            "admin_pages/agent_edit.html",
            _edit_context(agent, form, formset, request.actor),
            status=400,
        )
    initial = {
        "name": agent.name,
        "unique_name": agent.unique_name,
        "description": agent.description,
        "instructions": agent.instructions,
        "framework": agent.framework,
        "model_provider": agent.model_provider,
        "model_name": agent.model_name,
        "model_base_url": agent.model_base_url,
        "tool_call_limit": agent.tool_call_limit,
        "max_run_seconds": (agent.settings or {}).get("max_run_seconds"),
        "sub_agents": list(
            agent.graph_items.filter(type=GraphItemType.AGENT).values_list("item_id", flat=True)
        ),
    }
    form = AgentForm(request.actor.organization_id, agent, initial=initial)
    formset = McpFormSet(prefix="mcp", initial=_mcp_initial(agent))
    return render(request, "admin_pages/agent_edit.html", _edit_context(agent, form, formset, request.actor))


@member_page(role=Role.ADMIN)
@require_POST
def agent_delete(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = agents.get_agent(request.actor, agent_id)
    try:
        agents.delete_agent(request.actor, agent)
    except Conflict as exc:
        messages.error(request, exc.message)
        return redirect(f"/agents/{agent.id}/")
    messages.success(request, f"Agent {agent.name} deleted.")
    return redirect("/agents/")

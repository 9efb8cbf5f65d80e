"""Task pages: history, new task, the live task view and its actions, activity review.

Views validate, call one task API function as the session's Actor, and render; they never write
Task rows themselves.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.errors import BadRequest, Conflict, Invalid, TaskApiError, TooLarge
from console.models import Role
from console.web import connections, markdown, timeline
from console.web.forms import FollowUpForm, InternalStatusForm, NewTaskForm
from console.web.guard import member_page
from console.web.history import RUNNING, HistoryFilterForm, HistoryQuery
from console.web.session import task_user
from tasks_app import actions, uploads
from tasks_app.models import ActivityEntry, ActivityKind, InternalStatusChange, Task, TaskEvent
from tasks_app.schemas import TaskCreateIn, TaskUpdateIn


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _back(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


# ---- history ----------------------------------------------------------------------------------


@member_page
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    """/tasks/: the filtered, sorted, keyset-paged history; `?partial=rows` for the live refresh."""
    form = HistoryFilterForm(request.actor, request.GET)
    context = {"nav": "tasks", "form": form, "running": RUNNING}
    if not form.is_valid():
        context.update(query=None, page=None, counts={})
        return render(request, "tasks/history.html", context, status=400)
    query = HistoryQuery.from_form(request.actor, form)
    try:
        page = query.page(
            settings.CONSOLE_PAGE_SIZE, request.GET.get("after", ""), request.GET.get("before", "")
        )
    except BadRequest as exc:
        messages.error(request, exc.message)
        return redirect(f"/tasks/?{query.query_string()}")
    first_page = not request.GET.get("after") and not request.GET.get("before")
    counts = query.counts()
    context.update(
        query=query,
        page=page,
        counts=counts,
        total=sum(counts.values()),
        first_page=first_page,
        filters_qs=query.query_string(),
        here=f"/tasks/?{query.query_string()}",
        status_links=[(s, n, query.query_string(status=[s])) for s, n in counts.items()],
        all_statuses_qs=query.query_string(status=[]),
        live=first_page and query.sort in {"newest", "updated"},
    )
    template = "tasks/history.html#results" if request.GET.get("partial") == "rows" else "tasks/history.html"
    return render(request, template, context)


@member_page(role=Role.MEMBER)
@require_POST
def bulk_stop(request: HttpRequest) -> HttpResponse:
    ids = request.POST.getlist("task")[: settings.CONSOLE_PAGE_SIZE * 4]
    stopped, finished = 0, 0
    for task_id in ids:
        try:
            actions.stop_task(request.actor, task_id)
            stopped += 1
        except Conflict:
            finished += 1
        except TaskApiError:  # another organization's or unknown ids are skipped, never revealed
            continue
    if not ids:
        messages.error(request, "Select the running tasks to stop first.")
    else:
        note = f" {finished} had already finished." if finished else ""
        messages.success(request, f"Stop requested for {stopped} task{'s' if stopped != 1 else ''}.{note}")
    return redirect(_back(request, "/tasks/"))


# ---- new task ---------------------------------------------------------------------------------


@member_page(role=Role.MEMBER)
@require_http_methods(["GET", "POST"])
def new_task(request: HttpRequest) -> HttpResponse:
    form = NewTaskForm(
        request.actor.organization_id,
        request.POST or None,
        request.FILES or None,
        initial={"agent": request.GET.get("agent", "")},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        body = {
            "input": {"text": data["prompt"], "files": data["urls"], "user": task_user(request.member)},
            "events_streaming": bool(data["stream"]),
            "source": "console",
        }
        saved = []
        try:
            saved = uploads.save_uploads(request, request.actor, data["files"])
            task = actions.create_task(
                request.actor,
                data["agent"],
                TaskCreateIn.model_validate(body),
                uploads={u.url: u.storage_name for u in saved},
            )
        except (Invalid, TooLarge) as exc:
            uploads.discard(saved)
            form.add_error("files" if "file" in exc.message.lower() else "prompt", exc.message)
        else:
            return redirect(f"/tasks/{task.id}/")
    status = 400 if request.method == "POST" else 200
    preflight = connections.missing_by_agent(request.member)  # servers to connect before the task needs them
    return render(
        request, "tasks/new.html", {"nav": "new", "form": form, "preflight": preflight}, status=status
    )


# ---- the live task view -----------------------------------------------------------------------


def _servers(task: Task) -> dict[str, str]:
    return {g.key: g.name or g.key for g in task.agent.graph_items.all()}


def _task_context(request: HttpRequest, task: Task, **extra) -> dict:
    events = list(TaskEvent.objects.filter(task_id=task.id).order_by("seq"))
    servers = _servers(task)
    items = timeline.build(task, events, servers)
    if not task.is_finished and items and items[-1].kind == "text":
        items[-1].data["streaming"] = True
    return {
        "nav": "tasks",
        "task": task,
        "items": items,
        "servers": servers,
        "since": events[-1].seq if events else 0,
        "changes": list(
            InternalStatusChange.objects.filter(task_id=task.id).select_related("changed_by_user")[:50]
        ),
        "sub_tasks": list(
            task.sub_tasks.order_by("created_at").values("id", "status", "title", "agent__name")
        ),
        "status_form": extra.pop("status_form", None)
        or InternalStatusForm(initial={"internal_status": task.internal_status or ""}),
        "follow_form": extra.pop("follow_form", None) or FollowUpForm(),
        "tokens": task.tokens or {},
        "total_tokens": sum(
            int((task.tokens or {}).get(k) or 0) for k in ("prompt_tokens", "completion_tokens")
        ),
        "back_qs": request.GET.get("back", ""),
        **extra,
    }


@member_page
@require_GET
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    task = actions.get_task(request.actor, task_id)
    template = "tasks/detail.html#live" if request.GET.get("partial") == "live" else "tasks/detail.html"
    return render(request, template, _task_context(request, task))


@member_page(role=Role.MEMBER)
@require_POST
def stop(request: HttpRequest, task_id: str) -> HttpResponse:
    try:
        actions.stop_task(request.actor, task_id)
    except Conflict as exc:
        if _is_htmx(request):
            return HttpResponse(exc.message, status=409)
        messages.error(request, exc.message)
    else:
        if _is_htmx(request):
            return HttpResponse(status=204)
        messages.success(request, "Stop requested.")
    return redirect(f"/tasks/{task_id}/")


@member_page(role=Role.MEMBER)
@require_POST
def internal_status(request: HttpRequest, task_id: str) -> HttpResponse:
    task = actions.get_task(request.actor, task_id)
    form = InternalStatusForm(request.POST)
    status = 200
    if form.is_valid():
        try:
            task = actions.update_task(
                request.actor,
                task.id,
                TaskUpdateIn(internal_status=form.cleaned_data["internal_status"] or None),
                fields={"internal_status"},
                full_dump=False,
            )
        except Invalid as exc:
            form.add_error("internal_status", exc.message.split(": ", 1)[-1])
            status = 422
        else:
            if not _is_htmx(request):
                messages.success(request, "Internal status saved.")
                return redirect(f"/tasks/{task.id}/")
            form = InternalStatusForm(initial={"internal_status": task.internal_status or ""})
    else:
        status = 422
    if _is_htmx(request):
        context = _task_context(request, task, status_form=form, saved=status == 200)
        return render(request, "tasks/detail.html#internal_status", context, status=status)
    return render(request, "tasks/detail.html", _task_context(request, task, status_form=form), status=status)


@member_page(role=Role.MEMBER)
@require_POST
def follow_up(request: HttpRequest, task_id: str) -> HttpResponse:
    task = actions.get_task(request.actor, task_id)
    form = FollowUpForm(request.POST)
    if form.is_valid():
        body = {
            "id": task.id,
            "input": {"text": form.cleaned_data["prompt"], "user": task_user(request.member)},
            "events_streaming": True,
        }
        try:
            actions.create_task(request.actor, task.agent_id, TaskCreateIn.model_validate(body))
        except Conflict as exc:  # the task runs again (someone was faster): say so on the page
            messages.error(request, exc.message)
            return render(request, "tasks/detail.html", _task_context(request, task), status=409)
        except (Invalid, TooLarge) as exc:
            form.add_error("prompt", exc.message)
        else:
            return redirect(f"/tasks/{task.id}/")
    return render(request, "tasks/detail.html", _task_context(request, task, follow_form=form), status=422)


# ---- activity review --------------------------------------------------------------------------

KINDS = [(k.value, k.label) for k in ActivityKind]


@member_page
@require_GET
def activity(request: HttpRequest, task_id: str) -> HttpResponse:
    task = actions.get_task(request.actor, task_id)
    kinds = [k for k in request.GET.getlist("kind") if k in ActivityKind.values]
    entries = actions.activity_entries(task)
    if kinds:
        entries = [e for e in entries if e.kind in kinds]
    events = list(
        TaskEvent.objects.filter(
            task_id=task.id, type__in=["tool_call_request", "tool_call_result"]
        ).order_by("seq")
    )
    rows, turn, servers = [], 0, _servers(task)
    for entry in entries:
        rows.append({"entry": entry, "new_turn": entry.turn != turn, "view": _entry_view(entry, servers)})
        turn = entry.turn
    summary = timeline.tool_summary(events)
    return render(
        request,
        "tasks/activity.html",
        {
            "nav": "tasks",
            "task": task,
            "rows": rows,
            "kinds": KINDS,
            "selected": kinds,
            "summary": summary,
            "totals": {
                "calls": sum(r["calls"] for r in summary),
                "errors": sum(r["errors"] for r in summary),
                "total": round(sum(r["total"] for r in summary), 3),
            },
        },
    )


def _entry_view(entry: ActivityEntry, servers: dict[str, str]) -> dict:
    data = entry.data or {}
    if entry.kind == ActivityKind.MESSAGE:
        content = data.get("content") or {}
        return {
            "role": data.get("role", "agent"),
            "html": markdown.render(content.get("text")) if data.get("role") != "user" else "",
            "text": content.get("text") or "",
            "files": content.get("files") or [],
        }
    if entry.kind == ActivityKind.TOOL_CALL:
        return {
            "tool": data.get("tool_name", ""),
            "args": timeline.pretty(data.get("payload")),
            "result": timeline.pretty(data.get("result")),
            "is_error": bool(data.get("is_error")),
            "status": data.get("status") or ("failed" if data.get("is_error") else "completed"),
            "server": servers.get(data.get("graph_item_id") or "", data.get("graph_item_id") or ""),
        }
    if entry.kind == ActivityKind.REASONING:
        return {
            "title": data.get("title") or data.get("type") or "Thinking",
            "thought": data.get("thought") or "",
        }
    if entry.kind == ActivityKind.SUB_AGENT_TRIGGER:
        return {
            "agent_id": data.get("agent_id"),
            "query": data.get("query") or "",
            "task_id": data.get("sub_task_id"),
        }
    return {"type": data.get("type", ""), "message": (data.get("data") or {}).get("message", "")}

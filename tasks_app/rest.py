"""The xpander-compatible REST API (xpander-wire.md section 9), served under /api.

Routes parse and validate, call one task API function, and return the wire JSON; they never
write rows themselves. Bodies are parsed here rather than by ninja so that malformed JSON is a
400 and a wrong field a 422 that names it, as the wire contract asks.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI, Router
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import APIKeyHeader
from pydantic import BaseModel, ValidationError

from console.access import actor_for_request
from console.errors import Invalid, NotFound, TaskApiError, transient_database_error
from tasks_app import actions, events, jsonbody, uploads, wire
from tasks_app import openapi as doc
from tasks_app.actions import Actor
from tasks_app.models import Task
from tasks_app.schemas import EventIn, TaskCreateIn, TaskUpdateIn

LIST_QUERY = doc.query(
    ("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "How many, newest first"),
    ("status", {"type": "string"}, "Comma-separated statuses (pending, executing, ...)"),
    ("parent_task_id", {"type": "string"}, "Sub-tasks of this task"),
    ("triggering_agent_id", {"type": "string"}, "Tasks this agent started"),
    ("internal_status", {"type": "string"}, "Exact internal status"),
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class ApiKeyAuth(APIKeyHeader):
    """Ninja auth: x-api-key only, as the SDK sends it; the result is an Actor."""

    param_name = "x-api-key"

    def authenticate(self, request: HttpRequest, key: str | None) -> Actor:
        actor = actor_for_request(request)
        request.actor = actor
        return actor


def json_body(request: HttpRequest) -> Any:
    if not request.body:
        return {}
    return jsonbody.loads(request.body)


def parse(model: type[M], raw: Any, prefix: str = "") -> M:
    if not isinstance(raw, dict):
        raise Invalid(prefix.rstrip(".") or "body", "must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        # list indexes as [i], like the names the task API gives (graph[1].id, [0].type)
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        field = field or "body"
        raise Invalid(f"{prefix}{field}", first["msg"]) from None


def error_response(status: int, payload: dict[str, Any]) -> JsonResponse:
    return JsonResponse(payload, status=status)


def busy_response() -> JsonResponse:
    """503: the database is busy or unreachable for now; the request may be sent again."""
    response = error_response(503, {"detail": "The database is busy or unavailable; retry shortly"})
    response["Retry-After"] = "1"
    return response


def install_error_handlers(api: NinjaAPI) -> None:
    @api.exception_handler(TaskApiError)
    def _task_error(request: HttpRequest, exc: TaskApiError) -> HttpResponse:
        return error_response(exc.status_code, exc.to_json())

    @api.exception_handler(NinjaValidationError)
    def _validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        first = exc.errors[0] if exc.errors else {}
        loc = [str(p) for p in first.get("loc", []) if p not in ("query", "path", "body")]
        field = ".".join(loc) or "request"
        return error_response(422, {"detail": f"{field}: {first.get('msg', 'invalid')}", "field": field})

    @api.exception_handler(AuthenticationError)
    def _auth(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        return error_response(401, {"detail": "Missing or invalid API key (x-api-key header)"})

    @api.exception_handler(HttpError)
    def _http(request: HttpRequest, exc: HttpError) -> HttpResponse:
        return error_response(exc.status_code, {"detail": str(exc)})

    @api.exception_handler(RequestDataTooBig)
    def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
        return error_response(413, {"detail": f"Request body too large: {exc}"})

    @api.exception_handler(SuspiciousOperation)
    def _bad_request(request: HttpRequest, exc: SuspiciousOperation) -> HttpResponse:
        return error_response(400, {"detail": f"Bad request: {exc}"})

    @api.exception_handler(MultiPartParserError)
    def _bad_multipart(request: HttpRequest, exc: MultiPartParserError) -> HttpResponse:
        return error_response(400, {"detail": f"Malformed multipart body: {exc}"})

    @api.exception_handler(OperationalError)
    def _busy(request: HttpRequest, exc: OperationalError) -> HttpResponse:
        if not transient_database_error(exc):  # a broken schema or disk: the operator's, a 500
            return _crash(request, exc)
        # The database stayed locked past its timeout or could not be reached: the failed
        # transaction rolled back, and the same request can be sent again.
        log.warning("database unavailable on %s %s: %s", request.method, request.path, str(exc)[:200])
        return busy_response()

    @api.exception_handler(Exception)
    def _crash(request: HttpRequest, exc: Exception) -> HttpResponse:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, {"detail": "Internal server error"})


router = Router()


def _task_response(task: Task) -> JsonResponse:
    return JsonResponse(wire.task_json(task))


# ---- tasks ----------------------------------------------------------------------------------


@router.post(
    "/agent-execution/{id}",
    response=doc.responses(doc.TaskOut, *doc.BODY, 403, 409),
    openapi_extra=doc.body(TaskCreateIn, multipart=True),
)
def create_task(request: HttpRequest, id: str) -> HttpResponse:
    """JSON (the SDK's body), or multipart with that body in a `body` field and the files to upload.

    A malformed multipart body is refused by the ASGI server (daphne) itself: a 400 with no body.
    """
    if request.content_type == "multipart/form-data":
        uploads.check_before_body(request, request.auth, id)  # role, agent and size before the body
        raw = jsonbody.loads(request.POST.get("body") or "{}", what="JSON in the 'body' field")
        data = parse(TaskCreateIn, raw)
        saved = uploads.save_uploads(request, request.auth, request.FILES.getlist("files"))
        try:
            task = actions.create_task(request.auth, id, data, uploads={u.url: u.storage_name for u in saved})
        except Exception:
            uploads.discard(saved)
            raise
        return _task_response(task)
    data = parse(TaskCreateIn, json_body(request))
    task = actions.create_task(request.auth, id, data)
    return _task_response(task)


@router.get(
    "/agent-execution/executions/history/user/{user_id}",
    response=doc.responses(list[doc.TaskListItemOut]),
    openapi_extra=LIST_QUERY,
)
def list_user_tasks(request: HttpRequest, user_id: str) -> HttpResponse:
    filters = {k: v for k, v in request.GET.items() if k in actions.LIST_FILTERS}
    filters["user_id"] = user_id
    tasks = actions.list_tasks(request.auth, filters=filters, limit=_limit(request))
    return JsonResponse([wire.task_list_item_json(t) for t in tasks], safe=False)


@router.get(
    "/agent-execution/executions/history/{agent_id}",
    response=doc.responses(list[doc.TaskListItemOut]),
    openapi_extra=doc.merge(LIST_QUERY, doc.query(("user_id", {"type": "string"}, "Tasks of this end user"))),
)
def list_agent_tasks(request: HttpRequest, agent_id: str) -> HttpResponse:
    filters = {k: v for k, v in request.GET.items() if k in actions.LIST_FILTERS}
    tasks = actions.list_tasks(request.auth, agent_id=agent_id, filters=filters, limit=_limit(request))
    return JsonResponse([wire.task_list_item_json(t) for t in tasks], safe=False)


def _limit(request: HttpRequest) -> int:
    return _int_param(request, "limit", 100, 1, 1000)


@router.get("/agent-execution/{id}/status", response=doc.responses(doc.TaskOut))
def get_task(request: HttpRequest, id: str) -> HttpResponse:
    return _task_response(actions.get_task(request.auth, id))


UPDATE_SPARSE_KEYS = {"status", "result", "source", "last_executed_node_id", "internal_status", "title"}
FULL_DUMP_MARKERS = {"id", "agent_id", "organization_id", "created_at", "input"}


@router.patch(
    "/agent-execution/{id}/update",
    response=doc.responses(doc.TaskOut, *doc.BODY, 403, 409),
    openapi_extra=doc.body(TaskUpdateIn),
)
def update_task(request: HttpRequest, id: str) -> HttpResponse:
    raw = json_body(request)
    data = parse(TaskUpdateIn, raw)
    full_dump = bool(FULL_DUMP_MARKERS & set(raw))
    fields = {k for k in raw if k in UPDATE_SPARSE_KEYS}
    task = actions.update_task(request.auth, id, data, fields=fields, full_dump=full_dump)
    return JsonResponse(actions.answer_json(task))


@router.delete("/agent-execution/{id}", response=doc.responses(doc.TaskOut, 403, 409))
async def stop_task(request: HttpRequest, id: str) -> HttpResponse:
    task = await actions.astop_task(request.auth, id)
    if not task.is_finished:
        task = await _wait_for_stop(request.auth, task)
    return JsonResponse(await sync_to_async(wire.task_json)(task))


async def _wait_for_stop(actor: Actor, task: Task) -> Task:
    """Give the worker STOP_WAIT_SECONDS to cancel the run, then finish the stop ourselves."""
    if not await events.wait_until_finished(task, timeout=settings.STOP_WAIT_SECONDS, poll=0.5):
        await actions.aforce_stop(task.id, "Stopped by request (the worker did not confirm in time)")
    return await sync_to_async(actions.get_task)(actor, task.id)


@router.get(
    "/activity/{agent_id}/{task_id}",
    response=doc.responses(doc.ActivityThreadOut),
    openapi_extra=doc.query(
        (
            "limit",
            {"type": "integer", "minimum": 1},
            "Page size (at most ACTIVITY_PAGE_MAX); without it, the whole log",
        ),
        ("after", {"type": "integer", "minimum": 0}, "Entries after this position: a page's `next_after`"),
    ),
)
def activity_log(request: HttpRequest, agent_id: str, task_id: str) -> HttpResponse:
    """The whole thread, as the SDK asks for it; with ?limit (and ?after) one page of it."""
    task = actions.get_task(request.auth, task_id)
    if task.agent_id != agent_id:
        raise NotFound(f"Task {task_id} not found for agent {agent_id}")
    if "limit" not in request.GET and "after" not in request.GET:
        return JsonResponse(wire.activity_thread_json(task, actions.activity_entries(task)))
    limit = _int_param(request, "limit", settings.ACTIVITY_PAGE_MAX, 1, settings.ACTIVITY_PAGE_MAX)
    after = _int_param(request, "after", 0, 0, 2**31 - 1)
    entries = actions.activity_entries(task, after=after, limit=limit + 1)
    page = entries[:limit]
    out = wire.activity_thread_json(task, page)
    out["next_after"] = page[-1].position if len(entries) > limit else None
    return JsonResponse(out)


def _int_param(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(name, "must be an integer") from None
    if not low <= value <= high:
        raise Invalid(name, f"must be between {low} and {high}")
    return value


@router.post(
    "/agent-execution/{id}/events/push",
    response=doc.responses(doc.PushOut, *doc.BODY, 403, 409),
    openapi_extra=doc.body({"oneOf": [doc.ref(EventIn), {"type": "array", "items": doc.ref(EventIn)}]}),
)
def push_events(request: HttpRequest, id: str) -> HttpResponse:
    raw = json_body(request)
    items = raw if isinstance(raw, list) else [raw]
    if len(items) > 500:
        raise Invalid("body", "at most 500 events per push")
    events = []
    for index, item in enumerate(items):
        event = parse(EventIn, item, prefix=f"[{index}].")
        events.append((event.type, event.data))
    rows = actions.push_events(request.auth, id, events)
    return JsonResponse({"accepted": len(rows), "last_seq": rows[-1].seq if rows else None})


# ---- agents as the SDK reads them -------------------------------------------------------------


@router.get("/agents/list", response=doc.responses(list[doc.AgentSummaryOut]))
def list_agents(request: HttpRequest) -> HttpResponse:
    from console.models import Agent

    agents = (
        Agent.objects.filter(organization_id=request.auth.organization_id)
        .only("id", "name", "instructions", "organization_id", "created_at", "description")
        .order_by("name")
    )
    return JsonResponse(
        [
            {
                "id": a.id,
                "name": a.name,
                "icon": "",
                "instructions": {"role": [], "goal": [], "general": a.instructions},
                "status": "ACTIVE",
                "organization_id": a.organization_id,
                "created_at": wire.iso(a.created_at),
                "description": a.description,
                "type": "regular",
            }
            for a in agents
        ],
        safe=False,
    )


@router.get("/agents/{agent_id}", response=doc.responses(doc.AgentOut))
def get_agent(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = actions.get_agent(request.auth, agent_id)
    return JsonResponse(wire.agent_json(agent))


@router.get("/metadata/default_llm_extra_headers", response=doc.responses(dict[str, str]))
def default_llm_extra_headers(request: HttpRequest) -> HttpResponse:
    return JsonResponse({})

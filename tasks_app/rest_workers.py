"""The routes of the official SDK's `@on_task` workers (xpander-on-task-wire.md R1, R2), and the
REST listing of an agent's live workers.

`GET /api/{org}/events/{agent_id}/` registers a worker and stays open: the registration first,
then one `agent-execution` event per delivered task. `POST /api/{org}/events/{worker_id}` carries
its heartbeats and capacity updates. The org segment is in these paths (not in the REST ones), the
GET has a trailing slash and the POST none: both forms are served. The worker's results come back
through the ordinary task routes (PATCH .../update), handled by the task API.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from ninja import Router
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from console.access import actor_for_request
from console.errors import Invalid, TaskApiError, TooLarge
from tasks_app import jsonbody, stream_slots, wire
from tasks_app import openapi as doc
from tasks_app.actions import Actor
from tasks_app.actions import workers as actions_workers
from tasks_app.rest import parse
from tasks_app.sse import KEYS, holding_slot
from tasks_app.worker_hub import Connection, hub, sse_frame
from tasks_app.worker_models import Worker

CONFLICT = "worker-environment-conflict"  # the SDK logs its `error` and exits 0


class WorkerEventIn(BaseModel):
    """A worker's status post: `{"id": uuid, "event": name, "data": ...}` (R2)."""

    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(default=None, max_length=64)
    event: Literal["worker-heartbeat", "worker-capacity-update", "worker-finished"]
    data: Any = None


class CapacityIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    is_busy: StrictBool


class WorkerOut(doc.Out):
    id: str
    agent_id: str
    environment: str
    connected_at: datetime
    last_heartbeat: datetime
    is_busy: bool
    tasks_in_hand: list[str] = Field(description="Tasks delivered to it and not finished, oldest first")


class WorkerPostOut(doc.Out):
    accepted: bool
    worker_id: str


def deployed_asset(worker: Worker, agent_name: str, unique_name: str) -> dict[str, Any]:
    """The registration's DeployedAsset: the nullable keys must be present (trap 6)."""
    return {
        "id": worker.id,
        "name": f"worker-{worker.id[-12:]}",
        "organization_id": worker.organization_id,
        "type": "worker",
        "created_at": wire.iso(worker.connected_at),
        "created_by": None,
        "last_heartbeat": wire.iso(worker.last_heartbeat),
        "configuration": None,
        "dedicated_agent_id": worker.agent_id,
        "parent_asset_id": None,
        "is_busy": False,
        "metadata": {"name": agent_name, "unique_name": unique_name},
    }


def _refusal(exc: TaskApiError, request: HttpRequest) -> HttpResponse:
    """An error the SDK can show: as an SSE conflict event (its status is not read), else JSON."""
    if "text/event-stream" in request.headers.get("accept", ""):
        body = sse_frame(CONFLICT, {"error": exc.message})
        return HttpResponse(body, status=exc.status_code, content_type="text/event-stream; charset=utf-8")
    return JsonResponse(exc.to_json(), status=exc.status_code)


@csrf_exempt
async def worker_events(request: HttpRequest, organization_id: str, ident: str) -> HttpResponse:
    """GET: a worker of agent `ident` connects; POST: worker `ident` reports its state."""
    request.url_organization_id = organization_id
    if request.method == "GET":
        return await _connect(request, ident)
    if request.method == "POST":
        return await sync_to_async(_status_post)(request, ident)
    return JsonResponse({"detail": f"Method {request.method} not allowed"}, status=405)


def _register(request: HttpRequest, agent_id: str) -> tuple[Actor, Worker, Callable[[], None]]:
    actor = actor_for_request(request)
    release = stream_slots.slots.acquire(("workers", actor.api_key_id), settings.SSE_MAX_STREAMS_PER_KEY)
    try:
        worker = actions_workers.register_worker(actor, agent_id, request.GET.get("environment", ""))
    except BaseException:
        release()
        raise
    return actor, worker, release


async def _connect(request: HttpRequest, agent_id: str) -> HttpResponse:
    try:
        actor, worker, release = await sync_to_async(_register)(request, agent_id)
    except TaskApiError as exc:
        return _refusal(exc, request)
    agent = await sync_to_async(lambda: (worker.agent.name, worker.agent.unique_name))()
    conn = Connection(worker.id, worker.agent_id, worker.organization_id)
    stream = holding_slot(release, _stream(conn, deployed_asset(worker, *agent), actor.api_key_id))
    weakref.finalize(stream, release)  # a response dropped before its first read
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"
    return response


async def _stream(conn: Connection, asset: dict[str, Any], key_id: int | None) -> AsyncIterator[str]:
    """The registration, then deliveries as they come, keep-alives between; detached however it ends."""
    yield sse_frame("worker-registration", asset)
    await hub.attach(conn)
    try:
        while True:
            try:
                first = await asyncio.wait_for(conn.frames.get(), timeout=settings.SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                if key_id is not None and not await KEYS.get(key_id):
                    yield sse_frame(CONFLICT, {"error": "The API key was revoked or its member deactivated"})
                    return
                yield ": keep-alive\n\n"
                continue
            frames = [first]
            while not conn.frames.empty():
                frames.append(conn.frames.get_nowait())
            yield "".join(frames)
    finally:
        await hub.detach(conn)


def _status_post(request: HttpRequest, worker_id: str) -> HttpResponse:
    try:
        actor = actor_for_request(request)
        try:
            raw = jsonbody.loads(request.body) if request.body else {}
        except RequestDataTooBig:
            raise TooLarge("Request body too large") from None
        event = parse(WorkerEventIn, raw)
        agent_id = request.GET.get("agent_id") or None
        if event.event == "worker-heartbeat":
            worker = actions_workers.worker_heartbeat(actor, worker_id, agent_id)
        elif event.event == "worker-capacity-update":
            if not isinstance(event.data, dict):
                raise Invalid("data", 'must be an object like {"is_busy": false}')
            capacity = parse(CapacityIn, event.data, prefix="data.")
            worker = actions_workers.worker_capacity(actor, worker_id, capacity.is_busy, agent_id)
            if not capacity.is_busy:
                hub.nudge_threadsafe(worker.agent_id)  # a slot is free: deliver what waits
        else:  # worker-finished: nothing in SDK 2.0.537 sends it; accepted for a known worker
            worker = actions_workers.get_worker(actor, worker_id, agent_id)
    except TaskApiError as exc:
        return JsonResponse(exc.to_json(), status=exc.status_code)
    return JsonResponse({"accepted": True, "worker_id": worker.id})


urlpatterns = [
    path("api/<str:organization_id>/events/<str:ident>", worker_events, name="worker-events"),
    path("api/<str:organization_id>/events/<str:ident>/", worker_events, name="worker-events-slash"),
]


# ---- REST: an agent's live workers --------------------------------------------------------------

router = Router()


@router.get("/{agent_id}/workers", response=doc.responses(list[WorkerOut]))
def list_workers(request: HttpRequest, agent_id: str) -> HttpResponse:
    """Connected workers with a heartbeat in the last WORKER_LEASE_SECONDS, oldest connection first."""
    return JsonResponse(
        [
            {
                "id": w.id,
                "agent_id": w.agent_id,
                "environment": w.environment,
                "connected_at": wire.iso(w.connected_at),
                "last_heartbeat": wire.iso(w.last_heartbeat),
                "is_busy": w.is_busy,
                "tasks_in_hand": held,
            }
            for w, held in actions_workers.live_workers(request.auth, agent_id)
        ],
        safe=False,
    )


# ---- the OpenAPI document of the plain views above ---------------------------------------------

_PATH_PARAMS = [
    {"in": "path", "name": "organization_id", "required": True, "schema": {"type": "string"}},
    {"in": "path", "name": "ident", "required": True, "schema": {"type": "string"}},
]


def _errors(*codes: int, sse: bool = False) -> dict[str, Any]:
    out = {}
    for code in codes:
        content: dict[str, Any] = {"application/json": {"schema": doc.ref(doc.ErrorOut)}}
        if sse:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        out[str(code)] = {"description": doc.ERROR_TEXT[code], "content": content}
    return out


doc.PLAIN_PATHS["/api/{organization_id}/events/{ident}/"] = {
    "get": {
        "operationId": "tasks_app_worker_connect",
        "summary": "An @on_task worker connects (server-sent events)",
        "description": (
            "Registers a worker of external agent `ident` and stays open: `event: worker-registration` "
            "(a DeployedAsset), then `event: agent-execution` with each delivered Task. Refusals carry "
            "`event: worker-environment-conflict` when the client accepts text/event-stream. Also "
            "served without the trailing slash."
        ),
        "parameters": [
            *_PATH_PARAMS,
            {"in": "query", "name": "environment", "required": False, "schema": {"type": "string"}},
            {"in": "query", "name": "supports_llm_gateway", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "The worker's stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(400, 401, 403, 404, 409, 429, sse=True),
        },
        "security": [{"ApiKeyAuth": []}],
    }
}
doc.PLAIN_PATHS["/api/{organization_id}/events/{ident}"] = {
    "post": {
        "operationId": "tasks_app_worker_status",
        "summary": "An @on_task worker's heartbeat or capacity update",
        "description": "Worker `ident` (the id of its registration) is alive, or busy / not busy.",
        "parameters": [
            *_PATH_PARAMS,
            {"in": "query", "name": "type", "required": False, "schema": {"type": "string"}},
            {"in": "query", "name": "agent_id", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": doc.ref(WorkerEventIn)}},
        },
        "responses": {
            "200": {
                "description": "Accepted",
                "content": {"application/json": {"schema": doc.ref(WorkerPostOut)}},
            },
            **_errors(400, 401, 404, 413, 422),
        },
        "security": [{"ApiKeyAuth": []}],
    }
}

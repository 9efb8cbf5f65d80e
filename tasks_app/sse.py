"""Server-sent events for one task: replay from the durable log, then follow live.

The stream resumes after `Last-Event-ID` (or `?since=`), sends keep-alive comments, and closes
once the task is finished and every event up to that point was sent: the official SDK's sync
`events()` only returns when the server closes.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from console.access import actor_for_request, key_is_valid
from tasks_app import actions, bus, live_receive, stream_slots, wire
from tasks_app.errors import BadRequest, TaskApiError
from tasks_app.models import TERMINAL_STATUSES, Task

PAGE = 500
ACCESS_ENDED = ": access ended: the API key was revoked or its member deactivated\n\n"
P = ParamSpec("P")
R = TypeVar("R")


def frame(task_id: str, organization_id: str, event: dict[str, Any]) -> str:
    payload = wire.event_json(task_id, organization_id, event)
    payload.pop("seq")
    return (
        f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"
    )


def parse_resume_point(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("since") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Last-Event-ID must be an event sequence number, got {raw[:40]!r}") from None
    if value < 0:
        raise BadRequest("Last-Event-ID must not be negative")
    return value


def _fetch(task_id: str, after: int) -> tuple[list[dict[str, Any]], str]:
    # Status first: a final status commits with its events, so reading the log after it sees them all.
    status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first() or "failed"
    rows = actions.events_after(task_id, after, limit=PAGE)
    return [wire.envelope(r) for r in rows], status


# Every open stream reads through these few threads, so streams add no thread or DB connection each.
_READS = ThreadPoolExecutor(max_workers=settings.SSE_READ_THREADS, thread_name_prefix="sse-read")


def on_read_threads(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine on the streams' shared read threads."""

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connections.close_all()  # these threads live long: reconnect on the next read
            raise

    return sync_to_async(run, thread_sensitive=False, executor=_READS)


afetch = on_read_threads(_fetch)
akey_is_valid = on_read_threads(key_is_valid)


async def task_events(request: HttpRequest, task_id: str) -> HttpResponse:
    try:
        actor = await sync_to_async(actor_for_request)(request)
        task = await sync_to_async(actions.get_task)(actor, task_id)
        after = parse_resume_point(request)
        release = stream_slots.slots.acquire(actor.api_key_id, settings.SSE_MAX_STREAMS_PER_KEY)
    except TaskApiError as exc:
        return JsonResponse(exc.to_json(), status=exc.status_code)
    key_id = actor.api_key_id
    stream = holding_slot(
        release, follow(task.id, task.organization_id, after, still_allowed=lambda: akey_is_valid(key_id))
    )
    weakref.finalize(stream, release)  # a response dropped (client gone) before its first read
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"
    return response


async def holding_slot(release: Callable[[], None], stream: AsyncGenerator[str]) -> AsyncIterator[str]:
    """Pass `stream` on and free its slot however it ends: finished, revoked or hung up."""
    try:
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk
    finally:
        release()


async def follow(
    task_id: str,
    organization_id: str,
    after: int,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncGenerator[str]:
    """Yield SSE frames after `after` until the task is finished and fully sent.

    Frames of one batch go out as one write: per-write cost in the ASGI server, not JSON, is what a
    busy stream pays for most. `still_allowed` is asked at least once a keep-alive, busy or quiet:
    a stream whose caller lost access (a revoked key) ends there.
    """
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = bus.group_name(task_id)
    await layer.group_add(group, channel)  # subscribe before reading the log: nothing falls between
    last = after

    def frames(events: list[dict[str, Any]]) -> str:
        nonlocal last
        out = []
        for event in events:
            out.append(frame(task_id, organization_id, event))
            last = event["seq"]
        return "".join(out)

    status = ""

    async def drain() -> AsyncIterator[str]:
        """The log after `last`, page by page; leaves the task's status in `status`."""
        nonlocal status
        while True:
            events, status = await afetch(task_id, last)
            yield frames(events)
            if len(events) < PAGE:
                return

    try:
        first = True
        async for chunk in drain():
            yield (": connected\n\n" if first else "") + chunk
            first = False
        if status in TERMINAL_STATUSES:
            return
        loop = asyncio.get_running_loop()
        beat = settings.SSE_KEEPALIVE_SECONDS
        next_beat = loop.time() + beat
        while True:
            message = await live_receive.receive(layer, channel, group, max(next_beat - loop.time(), 0))
            if loop.time() >= next_beat:
                next_beat = loop.time() + beat
                if still_allowed is not None and not await still_allowed():
                    yield ACCESS_ENDED
                    return
            if message is None:
                yield ": keep-alive\n\n"
            else:
                events = [e for e in message.get("events", []) if e["seq"] > last]
                status = message.get("status", "")
                if events and events[0]["seq"] == last + 1:
                    yield frames(events)
                    if status not in TERMINAL_STATUSES:
                        continue
            # A gap, a quiet period or a final status: the log decides.
            async for chunk in drain():
                if chunk:
                    yield chunk
            if status in TERMINAL_STATUSES:
                return
    finally:
        await layer.group_discard(group, channel)

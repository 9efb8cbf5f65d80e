"""Server-sent events for one task: replay from the durable log, then follow live.

The stream resumes after `Last-Event-ID` (or `?since=`), sends keep-alive comments, and closes
once the task is finished and every event up to that point was sent: the official SDK's sync
`events()` only returns when the server closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from pydantic_core import PydanticSerializationError, to_json

from console.access import Actor, actor_for_request, recently_authenticated, valid_keys
from console.errors import BadRequest, TaskApiError, transient_database_error
from tasks_app import actions, events, stream_slots, wire
from tasks_app.rest import busy_response

log = logging.getLogger(__name__)
ACCESS_ENDED = ": access ended: the API key was revoked or its member deactivated\n\n"


def frame(task_id: str, organization_id: str, event: dict[str, Any]) -> str:
    """One event as an SSE frame: its envelope with the task's ids, `seq` as the frame's id."""
    payload = wire.event_json(task_id, organization_id, event)
    payload.pop("seq")
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {compact_json(payload)}\n\n"


def compact_json(value: Any) -> str:
    """`json.dumps(value, separators=(",", ":"))`, in Rust (pydantic-core): a third of the CPU.

    The frames of a stream are its JSON: encoding them was 0.8 % of the server's CPU per agent run.
    Text outside ASCII is written as UTF-8 (the stream's charset), not as \\u escapes; what a JSON
    parser reads back is the same. A value pydantic-core will not encode (a lone surrogate from a
    row written before input was checked for them) is encoded by the standard library, as before.
    """
    try:
        return to_json(value).decode()
    except (PydanticSerializationError, UnicodeDecodeError):
        return json.dumps(value, separators=(",", ":"))


def parse_resume_point(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("since") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Last-Event-ID must be an event sequence number, got {raw[:40]!r}") from None
    if value < 0:
        raise BadRequest("Last-Event-ID must not be negative")
    return value


# Streams re-check their key every beat; the beats of all streams fall together, one query answers all.
KEYS: events.Batched[int, bool] = events.Batched(lambda ids: dict.fromkeys(valid_keys(ids), True), False)


def _caller_and_task(request: HttpRequest, task_id: str) -> tuple[Actor, str, str]:
    """Who asks, and the task's (id, organization) if they may see it: one trip to a database thread.

    A stream lasts: its key is read now, not taken from the few-second cache of API callers.
    """
    actor = actor_for_request(request, cached=False)
    return (actor, *actions.task_scope(actor, task_id))


_acaller_and_task = sync_to_async(_caller_and_task)


Opening = tuple[list[events.Envelope], str]  # the log's first page after the resume point, the status


def _opening(request: HttpRequest, task_id: str) -> tuple[Actor, str, str, int, Callable[[], None], Opening]:
    """`_caller_and_task`, the resume point, a stream slot and the log's first page: one trip.

    Called once the stream is subscribed to the task's group (events.subscribe), so the page read
    here is the follow's first read (status first, then the log, as `events.follow` reads). The
    slot is taken before the log is read: a key at its limit gets its 429 without the read.
    """
    actor = actor_for_request(request, cached=False)
    row = actions.task_scope_and_progress(actor, task_id)
    after = parse_resume_point(request)  # after the checks, as in the two-step opening: the same errors
    release = stream_slots.slots.acquire(actor.api_key_id, settings.SSE_MAX_STREAMS_PER_KEY)
    try:
        first = events.read_after_row(row.id, after, row.status, row.last_seq)
    except BaseException:
        release()
        raise
    return actor, row.id, row.organization_id, after, release, first


_aopening = sync_to_async(_opening)


async def _subscribed_early(request: HttpRequest, task_id: str) -> events.Subscription | None:
    """The stream's subscription, made before its caller is checked, when that is worth it: its key
    authenticated a moment ago (from memory: `recently_authenticated`) for the organization the
    URL names, and the id can name a group. A caller the server has not just seen costs no
    channel-layer work before its check. A channel layer that fails here leaves the stream to the
    two-step opening (which reports the layer's trouble as it always did)."""
    actor = recently_authenticated(request.headers.get("x-api-key"))
    if actor is None or not events.subscribable(task_id):
        return None
    url_org = getattr(request, "url_organization_id", None)
    if url_org is not None and url_org != actor.organization_id:
        return None
    try:
        return await events.subscribe(task_id)
    except Exception:
        log.warning("subscribing a stream early failed; it opens in two steps", exc_info=True)
        return None


async def task_events(request: HttpRequest, task_id: str) -> HttpResponse:
    """A task's event stream. A caller just seen subscribes first, then its key, the task and the
    log's first page are read in one call on the request's thread (one hop and one row read, where
    the two-step opening takes two of each: check, then subscribe and read)."""
    subscription = await _subscribed_early(request, task_id)
    first_read: Opening | None = None
    try:
        if subscription is not None:
            actor, task_id, organization_id, after, release, first_read = await _aopening(request, task_id)
        else:
            actor, task_id, organization_id = await _acaller_and_task(request, task_id)
            after = parse_resume_point(request)
            release = stream_slots.slots.acquire(actor.api_key_id, settings.SSE_MAX_STREAMS_PER_KEY)
    except TaskApiError as exc:
        await _unsubscribe(subscription)
        return JsonResponse(exc.to_json(), status=exc.status_code)
    except OperationalError as exc:
        await _unsubscribe(subscription)
        if not transient_database_error(exc):
            raise
        return busy_response()
    except BaseException:
        await _unsubscribe(subscription)
        raise
    key_id = actor.api_key_id
    follow = frames(
        task_id,
        organization_id,
        after,
        still_allowed=lambda: KEYS.get(key_id),
        subscription=subscription,
        first_read=first_read,
    )
    stream = holding_slot(release, follow)
    weakref.finalize(stream, release)  # a response dropped (client gone) before its first read
    if subscription is not None:
        weakref.finalize(stream, subscription.close_soon, asyncio.get_running_loop())
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"
    return response


async def _unsubscribe(subscription: events.Subscription | None) -> None:
    if subscription is not None:
        await subscription.close()


async def holding_slot(release: Callable[[], None], stream: AsyncGenerator[str]) -> AsyncIterator[str]:
    """Pass `stream` on and free its slot however it ends: finished, revoked or hung up."""
    try:
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk
    finally:
        release()


async def frames(
    task_id: str,
    organization_id: str,
    after: int,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    subscription: events.Subscription | None = None,
    first_read: Opening | None = None,
) -> AsyncGenerator[str]:
    """SSE frames of `events.follow`: closed once the task is finished and fully sent.

    Frames of one batch go out as one write: per-write cost in the ASGI server, not JSON, is what a
    busy stream pays for most. A stream whose caller lost access (a revoked key) ends with a comment.
    """
    first = True
    try:
        follow = events.follow(
            task_id, after, still_allowed=still_allowed, subscription=subscription, first_read=first_read
        )
        async with aclosing(follow) as items:
            async for item in items:
                if isinstance(item, events.Tick):
                    yield ": keep-alive\n\n"
                    continue
                chunk = "".join(frame(task_id, organization_id, event) for event in item)
                yield (": connected\n\n" + chunk) if first else chunk
                first = False
    except events.AccessEnded:
        yield ACCESS_ENDED

"""Websockets of the console: one task's events (/ws/tasks/<id>/?since=) and the live task list.

A socket is refused before it is accepted unless the session's member may read it (signed in,
active, still a member of the organization the session chose, the task in that organization).
While open, the member is re-checked every CONSOLE_WS_RECHECK_SECONDS; a member who lost access is
disconnected (close code 4403). Frames are JSON text; the protocol is in docs/websockets.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from console.errors import TaskApiError
from console.web.session import actor_for_session
from tasks_app import actions, bus, events
from tasks_app.actions import Actor

CLOSE_REFUSED = 4403  # access ended while the socket was open
QUIET_SECONDS = 15.0  # re-read the log after this long without a message (the member is re-checked apart)


def _since(scope: dict[str, Any]) -> int | None:
    raw = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("since", ["0"])[-1] or "0"
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


class _Guarded(AsyncWebsocketConsumer):
    """Authorise before accepting, pump frames from one coroutine, re-check the member on a timer."""

    actor: Actor | None = None
    _tasks: tuple[asyncio.Task, ...] = ()  # none until accepted

    def authorise(self) -> Actor:  # runs in a thread: it reads the database
        return actor_for_session(self.scope)

    async def connect(self) -> None:
        try:
            self.actor = await database_sync_to_async(self.authorise)()
        except TaskApiError:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        await self.accept()
        self._tasks = (asyncio.create_task(self._run()), asyncio.create_task(self._watch()))

    async def disconnect(self, code: int) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; anything they send is ignored."""

    async def _run(self) -> None:
        async for frame in self.frames():  # each socket defines its frames
            await self.send(text_data=json.dumps(frame, separators=(",", ":")))
        await self.close(code=1000)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(settings.CONSOLE_WS_RECHECK_SECONDS)
            try:
                await database_sync_to_async(self.authorise)()
            except TaskApiError:
                for task in self._tasks:
                    if task is not asyncio.current_task():
                        task.cancel()
                await self.close(code=CLOSE_REFUSED)
                return


class TaskEventsConsumer(_Guarded):
    """/ws/tasks/<id>/?since=<seq>: the task's events after `since`, then live, closed after task_finished."""

    def authorise(self) -> Actor:
        actor = actor_for_session(self.scope)
        actions.get_task(actor, self.scope["url_route"]["kwargs"]["task_id"])  # NotFound: refused
        return actor

    async def connect(self) -> None:
        self.since = _since(self.scope)
        if self.since is None:
            await self.close()
            return
        await super().connect()

    async def frames(self):
        """Each event's envelope as it is (wire.envelope), closed after the turn's task_finished."""
        items = events.follow(
            self.scope["url_route"]["kwargs"]["task_id"],
            self.since,
            until=events.Until.TASK_FINISHED,
            keepalive=QUIET_SECONDS,
        )
        async with contextlib.aclosing(items):
            async for item in items:
                if not isinstance(item, events.Tick):
                    for event in item:
                        yield event


class TaskListConsumer(_Guarded):
    """/ws/tasks/: one frame per change of any task of the member's organization."""

    async def frames(self):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        group = bus.org_group_name(self.actor.organization_id)
        await layer.group_add(group, channel)
        try:
            while True:
                message = await layer.receive(channel)
                if message.get("type") == "task.changed":
                    yield message["task"]
        finally:
            await layer.group_discard(group, channel)

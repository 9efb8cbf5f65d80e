"""The `@on_task` workers connected to this server process, and the loop that feeds them tasks.

Each worker's event stream is a `Connection` with a queue of frames. The dispatcher delivers an
agent's waiting tasks to its local workers with free slots (the most free first, so tasks spread),
when nudged: a worker connected, or a task of the agent was created, requeued or finished (the
organization's live-list messages on the channel layer), and on a WORKER_POLL_SECONDS timer for
what another process changed without a message. A delivery is a conditional claim in the database
(actions_workers.deliver_task), so workers on several processes never get one task twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connections

from tasks_app import bus, wire
from tasks_app.actions import workers as actions_workers

log = logging.getLogger(__name__)
R = TypeVar("R")


def sse_frame(event: str, data: object) -> str:
    """One named SSE event with bare JSON data: the shape the SDK's listener dispatches on."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class Connection:
    worker_id: str
    agent_id: str
    organization_id: str
    frames: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


REJOIN_SECONDS = 3600.0

# The hub's database work runs on one thread of its own, never on a request's (its loops outlive them).
_DB = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-hub")


def _on_hub_thread(fn: Callable[..., R], *args: Any) -> Awaitable[R]:
    def run() -> R:
        try:
            return fn(*args)
        except DatabaseError:
            connections.close_all()  # this thread lives long: reconnect on the next call
            raise

    return sync_to_async(run, thread_sensitive=False, executor=_DB)()


def _assign(agent_id: str, worker_ids: list[str]) -> list[tuple[str, str]]:
    """Deliver the agent's waiting tasks to these workers; (worker id, frame) for each delivery."""
    used = actions_workers.tasks_in_hand(worker_ids)
    # A worker that said it is busy still holds a slot for a task it finished: sent more, it would
    # stop reading its stream (and not acknowledge in time) until that slot is free.
    busy = actions_workers.busy_workers(worker_ids)
    free = {w: 0 if w in busy else actions_workers.SDK_CAPACITY - used.get(w, 0) for w in worker_ids}
    out: list[tuple[str, str]] = []
    for task_id in actions_workers.deliverable(agent_id, sum(max(n, 0) for n in free.values())):
        worker_id = max(free, key=lambda w: free[w])  # ties: the first connected
        if free[worker_id] <= 0:
            break
        task = actions_workers.deliver_task(task_id, worker_id)
        if task is not None:
            free[worker_id] -= 1
            out.append((worker_id, sse_frame("agent-execution", wire.task_json(task))))
    return out


class Hub:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self._orgs: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._channel: str | None = None
        self._loops: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start the dispatcher, reaper and hint listener once per event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            await self._ready.wait()
            return
        self._loop = loop  # set before any await: two first connections must not start two hubs
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._orgs = {}
        layer = get_channel_layer()
        self._channel = await layer.new_channel() if layer is not None else None
        # A fresh context: started from a worker's request, the loops must not inherit its thread.
        context = contextvars.Context()
        self._loops = [
            loop.create_task(self._dispatch_loop(), context=context),
            loop.create_task(self._reap_loop(), context=context),
        ]
        if self._channel is not None:
            self._loops.append(loop.create_task(self._hint_loop(), context=context))
        self._ready.set()

    async def stop(self) -> None:
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops, self._loop = [], None

    async def attach(self, conn: Connection) -> None:
        await self.start()
        self.connections[conn.worker_id] = conn
        count = self._orgs.get(conn.organization_id, 0)
        self._orgs[conn.organization_id] = count + 1
        if not count and self._channel is not None:
            await get_channel_layer().group_add(bus.org_group_name(conn.organization_id), self._channel)
        self.nudge(conn.agent_id)

    async def detach(self, conn: Connection) -> None:
        """The stream ended: no more deliveries; what it held comes back through the reaper."""
        if self.connections.pop(conn.worker_id, None) is None:
            return
        count = self._orgs.get(conn.organization_id, 1) - 1
        if count:
            self._orgs[conn.organization_id] = count
        else:
            self._orgs.pop(conn.organization_id, None)
            if self._channel is not None:
                with contextlib.suppress(Exception):
                    await get_channel_layer().group_discard(
                        bus.org_group_name(conn.organization_id), self._channel
                    )
        await sync_to_async(actions_workers.disconnect_worker)(conn.worker_id)

    async def _rejoin(self) -> None:
        """Renew the hint channel's group memberships, which channel layers expire (a day in memory)."""
        layer = get_channel_layer()
        for organization_id in list(self._orgs):
            with contextlib.suppress(Exception):
                await layer.group_add(bus.org_group_name(organization_id), self._channel)

    def nudge(self, agent_id: str) -> None:
        if self._wake is not None:
            self._dirty.add(agent_id)
            self._wake.set()

    def nudge_threadsafe(self, agent_id: str) -> None:
        """nudge() from a view's thread: a worker of the agent may have a free slot now."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.nudge, agent_id)

    def _local_agents(self) -> set[str]:
        return {c.agent_id for c in self.connections.values()}

    async def _hint_loop(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker hub: channel layer receive failed")
                await asyncio.sleep(1)
                continue
            task = message.get("task") or {}
            if task.get("status") != "executing" and task.get("agent_id") in self._local_agents():
                self.nudge(task["agent_id"])

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=settings.WORKER_POLL_SECONDS)
            except TimeoutError:
                self._dirty |= self._local_agents()  # the poll: changes made without a message
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for agent_id in dirty:
                workers = [c.worker_id for c in self.connections.values() if c.agent_id == agent_id]
                if not workers:
                    continue
                try:
                    deliveries = await _on_hub_thread(_assign, agent_id, workers)
                except Exception:
                    log.exception("delivering tasks of agent %s failed; the next poll retries", agent_id)
                    continue
                for worker_id, frame in deliveries:
                    conn = self.connections.get(worker_id)
                    if conn is not None:  # gone meanwhile: the ack timeout takes the task back
                        conn.frames.put_nowait(frame)

    async def _reap_loop(self) -> None:
        period = max(min(settings.WORKER_ACK_SECONDS, settings.WORKER_LEASE_SECONDS) / 4, 0.25)
        loop = asyncio.get_running_loop()
        rejoin = loop.time() + REJOIN_SECONDS
        while True:
            await asyncio.sleep(period)
            if loop.time() >= rejoin and self._channel is not None:
                rejoin = loop.time() + REJOIN_SECONDS
                await self._rejoin()
            try:
                agents = await _on_hub_thread(actions_workers.reap_deliveries, settings.WORKER_MAX_ATTEMPTS)
            except Exception:
                log.exception("worker hub: reaper pass failed")
                continue
            for agent_id in agents:
                self.nudge(agent_id)


hub = Hub()

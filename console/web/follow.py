"""Replay-then-follow of one task's events, for the console's websocket.

Subscribe to the task's channel-layer group first, then read the durable log after `since`, then
take group messages, going back to the log whenever a message does not continue exactly where the
last event left off (a gap, a lost message, a quiet period). Every event is yielded once, in `seq`
order. It returns after a `task_finished` that ends the log: each turn ends with one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from tasks_app import actions, bus, wire
from tasks_app.models import TERMINAL_STATUSES, Task

PAGE = 500
QUIET_SECONDS = 15.0  # re-read the log after this long without a message


def _read(task_id: str, after: int) -> tuple[list[dict[str, Any]], str]:
    # Status first: a final status commits with its events, so the log read after it holds them all.
    status = Task.objects.filter(pk=task_id).values_list("status", flat=True).first() or "failed"
    rows = actions.events_after(task_id, after, limit=PAGE)
    return [{"seq": r.seq, "type": r.type, "time": wire.iso(r.time), "data": r.data} for r in rows], status


aread = sync_to_async(_read, thread_sensitive=False)


async def follow_task(task_id: str, since: int = 0) -> AsyncIterator[dict[str, Any]]:
    """Yield `{"seq", "type", "time", "data"}` for every event after `since`, then live ones."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = bus.group_name(task_id)
    await layer.group_add(group, channel)
    last, last_type = since, ""
    try:
        while True:
            # The log decides: page through it until it is exhausted.
            while True:
                events, status = await aread(task_id, last)
                for event in events:
                    yield event
                    last, last_type = event["seq"], event["type"]
                if len(events) < PAGE:
                    break
            if status in TERMINAL_STATUSES and last_type in {"task_finished", ""}:
                return
            # Live: messages that continue the log are trusted; anything else sends us back to it.
            while True:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), timeout=QUIET_SECONDS)
                except TimeoutError:
                    break
                fresh = [e for e in message.get("events", []) if e["seq"] > last]
                if not fresh:
                    continue
                if fresh[0]["seq"] != last + 1:
                    break
                for event in fresh:
                    yield event
                    last, last_type = event["seq"], event["type"]
                    if last_type == "task_finished":
                        return
    finally:
        await layer.group_discard(group, channel)

"""Live fan-out of committed events over the channel layer, one group per task.

A message is a nudge that carries the new rows; the durable log stays the truth, and a
subscriber that sees a gap in `seq` reads the log instead of trusting the message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_name(task_id: str) -> str:
    return f"task-{task_id}"


def make_message(task_id: str, status: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "task.events", "task_id": task_id, "status": status, "events": events}


def org_group_name(organization_id: str) -> str:
    """The group of an organization's live task list: one message per change of any of its tasks."""
    return f"org-{organization_id}"


def make_org_message(organization_id: str, task: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "task.changed",
        "group": org_group_name(organization_id),
        "task_id": task["id"],
        "task": task,
    }


async def apublish(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(message.get("group") or group_name(message["task_id"]), message)
    except Exception:  # a broken channel layer must not fail the write that already committed
        log.exception("channel layer publish failed for task %s", message["task_id"])


_loop: asyncio.AbstractEventLoop | None = None


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Remember the server's event loop, so sync code (views in threads) can publish without waiting."""
    global _loop
    _loop = loop


def publish(message: dict[str, Any]) -> None:
    """Publish from sync code: hand the send to the server's loop (FIFO, so order is kept), or block."""
    loop = _loop
    if loop is not None and loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            asyncio.run_coroutine_threadsafe(apublish(message), loop)
            return
    async_to_sync(apublish)(message)

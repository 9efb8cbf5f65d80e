"""Receiving a task's live events when the channel layer may go away (a Redis restart).

The channel layer is only a nudge: the durable log is the truth. When a receive fails, the stream
reads the log instead (the caller drains it when this returns None) and joins the task's group
again, since a restarted Redis has forgotten every group. Used by the one follow (events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5  # how often a stream reads the log while the channel layer is down


async def receive(layer: Any, channel: str, group: str, timeout: float) -> dict[str, Any] | None:
    """The next message for `channel` within `timeout`, or None (time out, or the layer failed)."""
    try:
        return await asyncio.wait_for(layer.receive(channel), timeout=timeout)
    except TimeoutError:
        return None
    except Exception as exc:  # the layer's connection broke: read the log, then listen again
        log.warning("channel layer receive failed (%s); reading the log until it is back", exc)
        await asyncio.sleep(min(RETRY_SECONDS, timeout))
        with contextlib.suppress(Exception):  # still down: the next receive fails and retries
            await layer.group_add(group, channel)
        return None

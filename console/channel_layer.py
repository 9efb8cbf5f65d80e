"""The embedded default's channel layer: channels' in-memory layer, its expiry sweep amortized.

Why: channels' InMemoryChannelLayer sweeps every channel's queue and every group membership for
expired entries on each `receive` and each `group_send`. Every open stream waits in a `receive`
and every committed write sends to a group, so with 2,000 followed tasks each message costs a walk
over 2,000 channels and 2,000 groups: quadratic in the open streams, and most of the server's CPU
while 2,000 tasks only wait (measured in docs/benchmarks.md, "Against LangGraph's server").

Here the full sweep runs at most once every `sweep_seconds`; a receive still drops the expired
messages of its own channel first, so no expired message is ever delivered. A group send puts the
message on each member's queue in turn instead of starting a task per member (a send never waits:
a full queue raises at once), which every committed write paid for. Expiry stays what the
stock layer promises: a message lives `expiry` seconds (60), a membership `group_expiry` (a day);
only their removal from memory can come up to `sweep_seconds` later. A group send's last member
gets the message itself, the others a deep copy each (see `group_send`). Everything else (queues,
capacity, groups, a deep copy per `send`) is the stock layer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer


class SweepingInMemoryChannelLayer(InMemoryChannelLayer):
    """InMemoryChannelLayer whose full expiry sweep runs at most once every `sweep_seconds`."""

    def __init__(self, sweep_seconds: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if sweep_seconds < 0:
            raise ValueError("sweep_seconds must not be negative")
        self.sweep_seconds = sweep_seconds
        self._next_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.sweep_seconds
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Put the message on each member's queue: a deep copy each, as the stock layer does, but
        for the last member, which gets the message itself. A group send hands its message over
        (this project builds each message for one send and never touches it again), so every member
        still holds a message no one else does; a task's one follower (the usual case) costs no copy
        (the copies were 1 % of the server's CPU per agent run)."""
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = list(self.groups.get(group, ()))
        for i, channel in enumerate(members):
            with contextlib.suppress(ChannelFull):  # as the stock layer: a full member misses this one
                if i < len(members) - 1:
                    await self.send(channel, message)
                else:
                    self._put(channel, message)

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        """The stock layer's `send` of a message it may keep as it is (no deep copy)."""
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        self._drop_expired(channel)
        return await super().receive(channel)

    def _drop_expired(self, channel: str) -> None:
        """The stock sweep, for one channel: its expired messages go, and it leaves its groups."""
        queue = self.channels.get(channel)
        if queue is None:
            return
        now = time.time()  # the stock layer stamps messages with time.time() + expiry
        dropped = False
        while not queue.empty() and queue._queue[0][0] < now:  # type: ignore[attr-defined]
            queue.get_nowait()
            self._remove_from_groups(channel)
            dropped = True
        if dropped and queue.empty():
            self.channels.pop(channel, None)

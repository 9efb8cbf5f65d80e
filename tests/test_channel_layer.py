"""The embedded default's channel layer: channels' in-memory layer with an amortized expiry sweep.

What must hold is the stock layer's behaviour (groups, fan-out, capacity, no expired message ever
delivered, a channel whose message expired leaves its groups); only the walk over every channel
and group is no longer done on each message.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from console.channel_layer import SweepingInMemoryChannelLayer


async def received(layer, channel: str, timeout: float = 1.0):
    return await asyncio.wait_for(layer.receive(channel), timeout)


async def expire(layer) -> None:
    """Let every message sent so far pass its expiry (the layer is built with a tiny one)."""
    await asyncio.sleep(layer.expiry * 3)


def test_the_embedded_default_uses_it(settings):
    assert (
        settings.CHANNEL_LAYERS["default"]["BACKEND"] == "console.channel_layer.SweepingInMemoryChannelLayer"
    )
    assert isinstance(get_channel_layer(), SweepingInMemoryChannelLayer)


def test_a_negative_sweep_interval_is_refused():
    with pytest.raises(ValueError, match="sweep_seconds"):
        SweepingInMemoryChannelLayer(sweep_seconds=-1)


async def test_group_messages_reach_every_member_as_copies():
    layer = SweepingInMemoryChannelLayer()
    a, b, c = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("task-1", a)
    await layer.group_add("task-1", b)
    await layer.group_add("task-2", c)
    message = {"type": "task.events", "events": [{"seq": 1}]}
    await layer.group_send("task-1", message)
    got_a, got_b = await received(layer, a), await received(layer, b)
    assert got_a == got_b == message
    got_a["events"].append({"seq": 2})  # one receiver's copy is its own
    assert got_b["events"] == [{"seq": 1}] and message["events"] == [{"seq": 1}]
    with pytest.raises(TimeoutError):
        await received(layer, c, timeout=0.05)
    await layer.group_discard("task-1", a)
    await layer.group_send("task-1", {"type": "x"})
    assert await received(layer, b) == {"type": "x"}
    with pytest.raises(TimeoutError):
        await received(layer, a, timeout=0.05)


async def test_a_group_send_hands_its_message_over_and_each_member_holds_its_own():
    """The last member gets the message as sent (no copy: a task's one follower costs none); every
    other member a deep copy, so no two members share anything a receiver could change."""
    layer = SweepingInMemoryChannelLayer()
    members = [await layer.new_channel() for _ in range(3)]
    for channel in members:
        await layer.group_add("task-1", channel)
    message = {"type": "task.events", "events": [{"seq": 1, "data": {"n": 1}}]}
    await layer.group_send("task-1", message)
    got = [await received(layer, channel) for channel in members]
    assert got[-1] is message
    assert all(g == message for g in got)
    assert len({id(g["events"][0]["data"]) for g in got}) == 3
    alone = await layer.new_channel()
    await layer.group_add("task-2", alone)
    sent = {"type": "task.events", "events": []}
    await layer.group_send("task-2", sent)
    assert await received(layer, alone) is sent


async def test_capacity_still_holds():
    layer = SweepingInMemoryChannelLayer(capacity=2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "1"})
    await layer.send(channel, {"type": "2"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "3"})


async def test_an_expired_message_is_never_delivered_even_between_sweeps():
    layer = SweepingInMemoryChannelLayer(expiry=0.02, sweep_seconds=3600)
    channel = await layer.new_channel()
    await layer.group_send("nobody", {"type": "first sweep"})  # the next sweep is an hour away
    await layer.send(channel, {"type": "stale"})
    await expire(layer)
    await layer.send(channel, {"type": "fresh"})
    assert await received(layer, channel) == {"type": "fresh"}
    await layer.send(channel, {"type": "stale too"})
    await expire(layer)
    with pytest.raises(TimeoutError):
        await received(layer, channel, timeout=0.05)


async def test_a_channel_whose_message_expired_leaves_its_groups_when_it_receives():
    layer = SweepingInMemoryChannelLayer(expiry=0.02, sweep_seconds=3600)
    channel = await layer.new_channel()
    await layer.group_add("task-1", channel)
    await layer.group_send("task-1", {"type": "stale"})  # also the first sweep
    await expire(layer)
    with pytest.raises(TimeoutError):
        await received(layer, channel, timeout=0.05)
    assert channel not in layer.groups.get("task-1", {})


async def test_the_full_sweep_waits_for_its_interval_then_runs():
    layer = SweepingInMemoryChannelLayer(expiry=0.02, sweep_seconds=3600)
    idle, other = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("task-1", idle)
    await layer.group_send("task-1", {"type": "never read"})  # swept now; next sweep in an hour
    await expire(layer)
    await layer.group_send("task-2", {"type": "x"})
    await layer.send(other, {"type": "y"})
    assert await received(layer, other) == {"type": "y"}
    assert idle in layer.channels and idle in layer.groups["task-1"]  # not swept between intervals
    layer._next_sweep = 0.0  # the interval has passed
    await layer.group_send("task-2", {"type": "x"})
    assert idle not in layer.channels and idle not in layer.groups.get("task-1", {})


async def test_with_no_interval_it_sweeps_like_the_stock_layer():
    layer = SweepingInMemoryChannelLayer(expiry=0.02, sweep_seconds=0)
    idle = await layer.new_channel()
    await layer.group_add("task-1", idle)
    await layer.group_send("task-1", {"type": "never read"})
    await expire(layer)
    await layer.group_send("task-2", {"type": "x"})
    assert idle not in layer.channels and idle not in layer.groups.get("task-1", {})


async def test_a_full_member_misses_a_group_message_and_the_others_still_get_it():
    layer = SweepingInMemoryChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    for channel in (full, free):
        await layer.group_add("task-1", channel)
    await layer.send(full, {"type": "waiting"})
    await layer.group_send("task-1", {"type": "news"})
    assert await received(layer, full) == {"type": "waiting"}
    assert await received(layer, free) == {"type": "news"}

"""The per-key count of open event streams behind SSE_MAX_STREAMS_PER_KEY."""

from __future__ import annotations

import pytest

from console.errors import TooManyRequests
from tasks_app.stream_slots import StreamSlots


def test_it_refuses_a_slot_beyond_the_limit_of_one_key_only():
    slots = StreamSlots()
    slots.acquire(1, limit=2)
    slots.acquire(1, limit=2)
    with pytest.raises(TooManyRequests) as refused:
        slots.acquire(1, limit=2)
    assert refused.value.status_code == 429
    assert "already has 2 open event streams" in refused.value.message
    slots.acquire(2, limit=2)  # another key has its own slots


def test_it_frees_a_slot_once_however_often_it_is_released():
    slots = StreamSlots()
    release = slots.acquire(1, limit=2)
    slots.acquire(1, limit=2)
    release()
    release()  # the stream's end and the GC backstop may both call it
    slots.acquire(1, limit=2)
    with pytest.raises(TooManyRequests):
        slots.acquire(1, limit=2)

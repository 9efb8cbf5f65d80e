"""How many event streams each API key holds open, so that one key cannot take every connection.

The count lives in this process's memory: exact for the embedded default (one process). With
several server processes each counts its own streams, so a key could hold processes x the limit;
a shared count needs a store every process sees (e.g. Redis: one lease per open stream, renewed
at each keep-alive, so the streams of a crashed process expire).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from console.errors import TooManyRequests


class StreamSlots:
    """Open streams per key; `acquire` takes a slot and returns the one way to give it back."""

    def __init__(self) -> None:
        self._open: dict[object, int] = {}
        self._lock = threading.Lock()  # a slot may be given back from a GC finaliser on another thread

    def acquire(self, key: object, limit: int) -> Callable[[], None]:
        """Take a slot of `key` or raise 429; calling the result frees it (only the first call counts)."""
        with self._lock:
            count = self._open.get(key, 0)
            if count >= limit:
                raise TooManyRequests(
                    f"This API key already has {count} open event streams, the most allowed: close one first"
                )
            self._open[key] = count + 1
        freed = False

        def release() -> None:
            nonlocal freed
            with self._lock:
                if freed:
                    return
                freed = True
                left = self._open[key] - 1
                if left:
                    self._open[key] = left
                else:
                    del self._open[key]

        return release


slots = StreamSlots()

"""A process-wide memo: a plain dict that keeps at most so many entries, the oldest dropped first.

For the hot path's per-process memos (decrypted secrets, model objects, pydantic-ai agents): each
is a dict read without a lock; `remember` adds an entry and drops the oldest ones beyond the limit.
Dict operations are atomic under the GIL; two threads remembering at once may drop one entry more
than needed, never fail: a memo only saves work, so a missing entry is built again.
"""

from __future__ import annotations

import contextlib
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(store: dict[K, V], key: K, value: V, limit: int) -> V:
    """`store[key] = value`, first dropping the oldest entries until fewer than `limit` remain."""
    while store and len(store) >= limit:
        with contextlib.suppress(StopIteration, RuntimeError, KeyError):  # emptied or changed meanwhile
            del store[next(iter(store))]
    store[key] = value
    return value

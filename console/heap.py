"""The long-running processes' garbage collector: start-up's objects frozen, young collections rarer.

Why: Python's cyclic collector looks at every tracked object of a generation each time that
generation is collected. A server process carries a few hundred thousand objects that live as long
as it does (Django, the URL and template machinery, pydantic-ai, the OpenAI client's models), and
every full collection walked all of them again. Agent runs allocate fast, so with Python's default
threshold (a young collection every 700 net allocations) a run's short-lived objects were caught
alive by a young collection, promoted, and then kept the full collections coming. Measured with
bench/compare.py's `ours` phase (docs/benchmarks.md, issue 17's sixth round), the collector took
7.5-8% of the server's CPU at concurrency 32 (1% after), and a full collection with 2,000 tasks waiting took
over a second of CPU.

So once a process has loaded what it will use (`settle`, at a quiet point before it serves):
- what is alive then is moved to the permanent generation (`gc.freeze()`), which no collection
  walks again; it is collected, first, so no garbage is frozen;
- young collections run every 10,000 net allocations instead of 700, so fewer of a run's
  temporaries are alive when one runs, and fewer are promoted.

Reference counting still frees almost everything at once; only objects in reference cycles wait a
little longer for a young collection. One cost: a start-up object that is dropped later, in a cycle,
is never collected, and neither is what its cycle holds then (e.g. a first broker connection that a
reconnect replaces): bounded, once per process. `SERVER_GC=python` keeps Python's defaults (to rule
this out when chasing a memory question).
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Iterable

CHOICES = ("tuned", "python")
YOUNG_THRESHOLD = 10_000  # net allocations between young collections (Python's default: 700)


def gc_choice() -> str:
    """The collector setting SERVER_GC names; anything else stops the process with a message."""
    named = os.environ.get("SERVER_GC", "").strip().lower()
    if not named:
        return "tuned"
    if named not in CHOICES:
        raise SystemExit(f"SERVER_GC must be one of {', '.join(CHOICES)}, not {named!r}")
    return named


def settle(preload: Iterable[str] = ()) -> bool:
    """Import `preload`, collect, freeze what is left and raise the young threshold.

    Call it once, from a process's start-up, before it serves anything: whatever is alive at that
    moment is never walked by the collector again, so a request's or a run's objects must not be.
    Returns whether the collector was tuned (False under SERVER_GC=python, which still preloads:
    a first run that imports the runtime blocks its loop for seconds).
    """
    tuned = gc_choice() == "tuned"  # a wrong setting stops the process before seconds of imports
    for name in preload:
        importlib.import_module(name)
    if not tuned:
        return False
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return True

"""The one dispatch point between the task API and whatever executes built-in agents.

The task API calls `dispatch(task_id)` after a built-in task commits and `request_cancel(task_id)`
after a stop request commits. Both are hints: the database row is the truth, so a task whose hint
is lost is still found by a worker's poll, and a stop is still seen at the next lease heartbeat.
Executors: the in-process asyncio pool (embedded default) registers itself when it starts. It also
sets run slots aside (`take_seat`) for creates that claim their task themselves.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Something that runs built-in agents' tasks: told of new work and of stop requests."""

    def submit(self, task_id: str) -> None: ...

    def cancel(self, task_id: str) -> None: ...


_executors: list[Executor] = []


def register(executor: Executor) -> None:
    if executor not in _executors:
        _executors.append(executor)


def unregister(executor: Executor) -> None:
    if executor in _executors:
        _executors.remove(executor)


class Seat(Protocol):
    """A run slot an executor in this process set aside for a task the caller claims itself.

    Why: in the embedded default, a built-in task used to be claimed after its create committed: a
    hint to the pool, then the claim in a transaction of its own on the runtime's writer (a thread
    hop, a transaction, the task read again with its agent). A create holding a seat claims the task
    in its own transaction instead, and hands the claimed row straight to the run on commit.
    The create calls `start` after its commit, or `give_back` when it failed; `give_back` after
    `start` does nothing, so a caller may give back on any error without knowing how far it got.
    """

    worker_id: str
    lease_seconds: float

    def start(self, task: Any) -> None: ...
    def give_back(self) -> None: ...


def take_seat() -> Seat | None:
    """A free run slot of an executor in this process (the in-process pool), or None."""
    for executor in list(_executors):
        take = getattr(executor, "take_seat", None)
        if take is None:
            continue
        try:
            seat = take()
        except Exception:
            log.exception("taking a run slot failed; the task goes through the queue")
            continue
        if seat is not None:
            return seat
    return None


def dispatch(task_id: str) -> None:
    """Hand a committed pending task to the executors (a hint; they also poll)."""
    for executor in list(_executors):
        try:
            executor.submit(task_id)
        except Exception:
            log.exception("dispatch of task %s failed; a worker poll will pick it up", task_id)


def request_cancel(task_id: str) -> None:
    """Ask the executor running a task to cancel it now (the lease heartbeat is the fallback)."""
    for executor in list(_executors):
        try:
            executor.cancel(task_id)
        except Exception:
            log.exception("cancel hint for task %s failed; the heartbeat will see the stop", task_id)

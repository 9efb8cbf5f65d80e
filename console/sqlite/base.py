"""Django's SQLite backend, with the process's write transactions admitted first come, first served.

Why: SQLite has one writer at a time, and a connection that finds the write lock taken waits in
SQLite's busy handler, which sleeps and polls (up to 100 ms between tries). Nobody queues: a thread
that writes again and again (the runtime's group writer under 2,000 running tasks) takes the lock
back the moment it commits, and a request or a lease renewal polling beside it could wait out the
whole busy timeout and fail with "database is locked" (measured: lease renewals and API requests
failed that way while 2,000 tasks drained). Here every write transaction of the process
(`BEGIN IMMEDIATE` .. `COMMIT`/`ROLLBACK`) first takes a turn at a FIFO gate, so each waits for
the transactions ahead of it only. A turn not granted within the busy timeout is not waited for
again: the transaction goes on to SQLite without a second timeout (it starts at once or fails as
"database is locked"), so no write waits longer than the one timeout, as before. Other processes on the same
file still meet only SQLite's own lock.
"""

from __future__ import annotations

import os
import threading
from collections import deque

from django.db.backends.sqlite3 import base


class FairGate:
    """A lock handed to its waiters in the order they came (a thread that just left queues anew)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        """Wait for this thread's turn, at most `timeout` seconds; False when it did not come."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=max(timeout, 0)):
            return True  # the holder handed the gate over
        with self._mutex:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over between the timeout and now: the turn is ours
            return False

    def release(self) -> None:
        """Hand the gate to the first waiter, or open it."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


WRITE_GATE = FairGate()
# A forked child has only the thread that forked: a turn held or awaited by any other thread of the
# parent (its mutex too) would never be given back there, and the child's first write would wait
# out its timeout. The child starts with an open gate.
os.register_at_fork(after_in_child=WRITE_GATE._reset)


class DatabaseWrapper(base.DatabaseWrapper):
    """The stock wrapper; its transactions take a turn at WRITE_GATE (module docstring says why)."""

    _holds_gate = False

    def _start_transaction_under_autocommit(self) -> None:
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        self._holds_gate = WRITE_GATE.acquire(timeout)
        try:
            if self._holds_gate:
                super()._start_transaction_under_autocommit()
            else:
                self._begin_without_waiting(timeout)
        except BaseException:
            self._leave_gate()
            raise

    def _begin_without_waiting(self, timeout: float) -> None:
        """The turn did not come within the busy timeout: SQLite gets no second timeout to wait out."""
        self.connection.execute("PRAGMA busy_timeout = 0")
        try:
            super()._start_transaction_under_autocommit()
        finally:
            self.connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._leave_gate()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._leave_gate()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._leave_gate()

    def _leave_gate(self) -> None:
        if self._holds_gate:
            self._holds_gate = False
            WRITE_GATE.release()

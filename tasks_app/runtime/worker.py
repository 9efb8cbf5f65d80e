"""The worker: an asyncio pool that runs many tasks at once in one process.

It claims pending built-in tasks with a conditional UPDATE (so two workers never run one task),
renews each task's lease with a heartbeat that also notices stop requests, and reaps tasks whose
lease expired (a crashed worker) back to the queue, or fails them after WORKER_MAX_ATTEMPTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import threading
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings

from console import oauth
from console.models import Framework
from tasks_app import actions, bus, dispatch
from tasks_app.actions import retention as actions_retention
from tasks_app.actions import signin as actions_signin
from tasks_app.models import Status, Task
from tasks_app.runtime.runner import SHUTDOWN, Loaded, preload, release_on_cancel, run_turn

log = logging.getLogger(__name__)


def _pending_ids(limit: int) -> list[str]:
    return list(
        Task.objects.filter(
            status=Status.PENDING, agent__framework=Framework.BUILTIN, stop_requested_at__isnull=True
        )
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )


# How long a stopping pool waits for creates holding a seat to commit and hand their task back.
SEAT_WAIT_SECONDS = 5.0

# Its own threads: a renewal queued behind busy runs' writes would let leases lapse.
_renew = sync_to_async(actions.renew_leases, thread_sensitive=False)


class _Seat:
    """A run slot of a pool set aside for a create that claims its task itself (dispatch.Seat)."""

    __slots__ = ("_pool", "lease_seconds", "settled", "worker_id")

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self.worker_id = pool.worker_id
        self.lease_seconds = settings.WORKER_LEASE_SECONDS
        self.settled = False  # started or given back: a seat counts until then, and only once

    def start(self, task: Task) -> None:
        """After the create's commit, on its thread: what the run reads is read here (on a database
        thread already: runner.preload), then the run starts on the pool's loop."""
        self._pool._seat_taken_up(self, task, preload(task))

    def give_back(self) -> None:
        """The create failed (or never committed): the slot is free again. After start(), a no-op."""
        self._pool._settle(self)


class WorkerPool:
    def __init__(self, worker_id: str | None = None, concurrency: int | None = None) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or settings.WORKER_CONCURRENCY
        self.running: dict[str, asyncio.Task] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._hints: asyncio.Queue[str] | None = None
        self._loops: list[asyncio.Task] = []
        self._leases: asyncio.Task | None = None
        self._seats = 0  # slots set aside for creates claiming their task (take_seat), not yet started
        self._seats_lock = threading.Lock()  # creates take seats on request threads
        self._stopping = False
        self._context = contextvars.Context()  # set by start()
        self._handing_back: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        # What the claim loop's runs inherit; seated runs get it too, not their create's request's.
        self._context = contextvars.copy_context()
        bus.bind_loop(self.loop)
        self._hints = asyncio.Queue()
        dispatch.register(self)
        self._loops = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._reap_loop())]
        self._loops.append(asyncio.create_task(self._retention_loop()))
        log.info("worker %s started (concurrency %d)", self.worker_id, self.concurrency)

    async def stop(self) -> None:
        with self._seats_lock:
            self._stopping = True  # no new seats; a seat taken up from now on hands its task back
        dispatch.unregister(self)
        for t in self._loops:
            t.cancel()
        for task_id, t in list(self.running.items()):
            release_on_cancel(task_id)
            t.cancel(SHUTDOWN)
        await asyncio.gather(*self._loops, *self.running.values(), return_exceptions=True)
        # Creates that hold a seat commit (or fail) within a transaction's time: their tasks are
        # handed back here rather than left to lapse (a lapsed lease costs the task an attempt).
        deadline = asyncio.get_running_loop().time() + SEAT_WAIT_SECONDS
        while self._seats and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.gather(*self._handing_back, return_exceptions=True)

    # Thread-safe hints from the task API (they may come from a sync_to_async thread).
    def submit(self, task_id: str) -> None:
        if self.loop and self._hints is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._hints.put_nowait, task_id)

    def cancel(self, task_id: str) -> None:
        if self.loop and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_local, task_id)

    def take_seat(self) -> _Seat | None:
        """A free run slot for a create that claims its task in its own transaction (dispatch.Seat).

        Thread-safe: creates run on request threads. None when the pool is full or stopping; the
        task then goes through the queue (hint and claim) as before.
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            return None
        with self._seats_lock:
            if self._stopping or len(self.running) + self._seats >= self.concurrency:
                return None
            self._seats += 1
        return _Seat(self)

    def _settle(self, seat: _Seat) -> None:
        """Free `seat`'s slot, once (a second call does nothing)."""
        with self._seats_lock:
            if not seat.settled:
                seat.settled = True
                self._seats -= 1

    def _seat_taken_up(self, seat: _Seat, task: Task, loaded: Loaded | None = None) -> None:
        """From the create's thread, after its commit: start the run on the pool's loop."""
        loop = self.loop
        if loop is None or loop.is_closed():  # the lease lapses and a reaper requeues the task
            self._settle(seat)
            return
        try:
            # Not in the create's context (the calling thread's): a request's ThreadSensitiveContext
            # ends with it, and the run's database calls would fail once the response is sent.
            loop.call_soon_threadsafe(self._start_seated, seat, task, loaded, context=self._context.copy())
        except RuntimeError:  # closed meanwhile
            self._settle(seat)

    def _start_seated(self, seat: _Seat, task: Task, loaded: Loaded | None = None) -> None:
        """On the loop: run the task its create claimed for this pool (or hand it back if stopping)."""
        if task.id in self.running:  # cannot happen (only a pending task is claimed): run it once
            self._settle(seat)
            log.warning("task %s claimed by its create was already running here", task.id)
            return
        if self._stopping:
            self._settle(seat)
            back = asyncio.create_task(self._hand_back(task.id))
            self._handing_back.add(back)  # the loop keeps only weak references to tasks
            back.add_done_callback(self._handing_back.discard)
            return
        self._start_run(task.id, task, loaded)
        self._settle(seat)  # after the run counts in `running`: the pool is never over-committed

    def _start_run(self, task_id: str, claimed: Task, loaded: Loaded | None = None) -> asyncio.Task:
        """Run a task claimed for this pool; it counts in `running` until its run is over.

        Removed by a done-callback, not by the run itself: a run cancelled before its first step
        (a stop right after the claim) never executes its body, and would hold its slot forever.
        """
        run = asyncio.create_task(self._execute(task_id, claimed, loaded))
        self.running[task_id] = run
        run.add_done_callback(lambda t: self.running.pop(task_id) if self.running.get(task_id) is t else None)
        return run

    async def _hand_back(self, task_id: str) -> None:
        """Give a task claimed for this stopping pool back to the queue (pending, no lease)."""
        try:
            await actions.arelease_task(task_id, self.worker_id)
        except Exception:  # its lease lapses and the reaper gives it back instead
            log.exception("handing task %s back failed", task_id)

    def _cancel_local(self, task_id: str) -> None:
        run = self.running.get(task_id)
        if run is not None and not run.cancelling():  # a second cancel would cut the stop's own cleanup
            run.cancel()

    async def _claim_loop(self) -> None:
        """Claim hinted tasks at once, and poll the database at least every WORKER_POLL_SECONDS.

        Hints are only a shortcut: polling on a timer too means a busy stream of hints never
        starves tasks whose hint was lost (created by another process, or while this pool was full).
        """
        assert self._hints is not None
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while True:
            candidates: list[str] = []
            try:
                timeout = max(next_poll - loop.time(), 0.0)
                candidates.append(await asyncio.wait_for(self._hints.get(), timeout=timeout))
                while not self._hints.empty():
                    candidates.append(self._hints.get_nowait())
            except TimeoutError:
                pass
            free = self.concurrency - len(self.running) - self._seats
            if loop.time() >= next_poll and free > 0:
                next_poll = loop.time() + settings.WORKER_POLL_SECONDS
                candidates += await sync_to_async(_pending_ids)(free)
            for task_id in dict.fromkeys(candidates):
                if task_id in self.running:
                    continue
                # A seat of its own while it claims: creates take theirs meanwhile, on other threads.
                seat = self.take_seat()
                if seat is None:
                    break  # full (or stopping): the poll finds the rest later
                try:
                    task = await actions.aclaim_task(task_id, self.worker_id, settings.WORKER_LEASE_SECONDS)
                except Exception:
                    log.exception("claiming task %s failed", task_id)
                    task = None
                if task is not None:
                    self._start_run(task_id, task)
                self._settle(seat)
            if len(self.running) + self._seats >= self.concurrency:
                await asyncio.sleep(0.05)  # full: let runs finish (and seats settle) before looking again

    async def _execute(self, task_id: str, claimed: Task | None = None, loaded: Loaded | None = None) -> None:
        self._ensure_lease_loop()
        run = asyncio.create_task(run_turn(task_id, self.worker_id, claimed, loaded))
        try:
            await run
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("task %s: the runner raised", task_id)
            await actions.afinish_task(
                task_id, Status.ERROR, "The worker failed while running this task", worker_id=self.worker_id
            )

    def _ensure_lease_loop(self) -> None:
        """Start the pool's one lease heartbeat with its first run (every pool class runs through here)."""
        if self._leases is None or self._leases.done():
            self._leases = asyncio.create_task(self._lease_loop())
            self._loops.append(self._leases)

    async def _lease_loop(self) -> None:
        """Renew every running task's lease in one statement per period, and cancel the runs lost.

        One UPDATE for the pool instead of one per task (500 waiting runs cost 100 UPDATEs/s before);
        a run whose task was stopped, finished elsewhere or taken over is cancelled, as the stop
        hint would.
        """
        while True:
            await asyncio.sleep(settings.WORKER_HEARTBEAT_SECONDS)
            await self._renew_leases()

    async def _renew_leases(self) -> None:
        if not self.running:
            return
        try:
            lost = await _renew(self.worker_id, settings.WORKER_LEASE_SECONDS, list(self.running))
        except Exception:
            log.exception("lease renewal of worker %s failed", self.worker_id)
            return
        for task_id in lost:  # stopped, finished elsewhere, or taken over: stop running it
            self._cancel_local(task_id)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(max(settings.WORKER_LEASE_SECONDS / 2, 0.5))
            try:
                # Our own runs first: a loop that was blocked (a slow first import) must not reap them.
                await self._renew_leases()
                for task_id in await actions.arequeue_expired(settings.WORKER_MAX_ATTEMPTS):
                    self.submit(task_id)
                await actions_signin.afail_expired_waits()  # paused tasks nobody signed in for
                await sync_to_async(oauth.forget_old_flows)()  # spent sign-in states
            except Exception:
                log.exception("reaper pass failed")

    async def _retention_loop(self) -> None:
        """Purge tasks past their organization's retention now and then (off unless configured)."""
        while True:
            await asyncio.sleep(settings.RETENTION_SWEEP_SECONDS)
            try:
                await sync_to_async(actions_retention.purge_expired)()
            except Exception:
                log.exception("retention pass failed")


_embedded: WorkerPool | None = None


async def start_embedded() -> WorkerPool | None:
    """Start the in-process pool once per server process (the embedded default)."""
    global _embedded
    if settings.TASK_EXECUTION != "inprocess" or _embedded is not None:
        return _embedded
    _embedded = WorkerPool()
    await _embedded.start()
    return _embedded


async def stop_embedded() -> None:
    global _embedded
    if _embedded is not None:
        pool, _embedded = _embedded, None
        with contextlib.suppress(Exception):
            await pool.stop()

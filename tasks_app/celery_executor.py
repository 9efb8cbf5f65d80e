"""Runs delivered by Celery (TASK_EXECUTION=celery): the executor the task API dispatches to, and
the worker side that runs many of them at once on one asyncio loop per worker process.

Web servers and workers register `CeleryExecutor` with tasks_app.dispatch: a new task becomes one
broker message (delivered at once, no poll), a stop becomes a broadcast control command that every
worker receives at once. A worker's Celery threads each wait for one run; the runs themselves share
one event loop (the same WorkerPool machinery as the embedded default). The message is acknowledged
after the run (acks late), so a worker that vanishes leaves it to be redelivered; the database lease
decides who runs: a run delivered twice is claimed once, and a run whose worker died is handed back
by the reaper of any live worker, then dispatched again.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from celery import signals
from celery.worker.control import control_command
from django.conf import settings

from console import heap, serve
from console.celery import app
from tasks_app import actions, dispatch
from tasks_app.models import Status
from tasks_app.runtime import WORKER_IMPORTS
from tasks_app.runtime.worker import WorkerPool

log = logging.getLogger(__name__)

RUN_TASK = "tasks_app.run"
STOP_COMMAND = "stop_run"


class CeleryExecutor:
    """The dispatch backend: hand a committed task to the broker, broadcast a stop to the workers."""

    def submit(self, task_id: str) -> None:
        run_task.apply_async(args=[task_id])

    def cancel(self, task_id: str) -> None:
        app.control.broadcast(STOP_COMMAND, arguments={"task_id": task_id})


_executor = CeleryExecutor()


def register_executor() -> None:
    """Route dispatch through Celery in this process (called at start when TASK_EXECUTION=celery)."""
    dispatch.register(_executor)


class CeleryRunPool(WorkerPool):
    """The runs of one worker process on one loop; Celery decides how many (its --concurrency).

    Unlike the embedded pool it claims only what the broker delivers (no poll, no dispatch hints);
    it still renews leases with a heartbeat and reaps expired leases, sending them back to Celery.
    """

    async def start(self) -> None:
        from tasks_app import bus

        self.loop = asyncio.get_running_loop()
        bus.bind_loop(self.loop)
        self._loops = [asyncio.create_task(self._reap_loop())]
        log.info("celery run pool %s started", self.worker_id)

    async def stop(self) -> None:
        await super().stop()

    def submit(self, task_id: str) -> None:
        """A task the reaper handed back goes to the broker (from a thread: publishing blocks)."""
        assert self.loop is not None
        self.loop.run_in_executor(None, dispatch.dispatch, task_id)

    async def run_delivered(self, task_id: str) -> str:
        """Claim and run one delivered task; return what happened (for the worker's log)."""
        current = self.running.get(task_id)
        if current is not None:
            # Delivered again while a run here goes on: if that run lost its lease (the reaper gave
            # the task back), this delivery is the one that must run it, once the old run is gone.
            await asyncio.wait({current})
        task = await actions.aclaim_task(task_id, self.worker_id, settings.WORKER_LEASE_SECONDS)
        if task is None:
            return "not claimed (finished, stopped or running elsewhere)"
        run = self._start_run(task_id, task)
        done, _ = await asyncio.wait({run}, timeout=settings.CELERY_RUN_TIMEOUT_SECONDS)
        if not done:  # finish it first, so the cancel that follows is not taken for a user's stop
            await actions.afinish_task(
                task_id,
                Status.FAILED,
                f"The run took longer than {settings.CELERY_RUN_TIMEOUT_SECONDS} seconds",
                worker_id=self.worker_id,
            )
            self._cancel_local(task_id)
            await asyncio.wait({run})
        return "ran"


class _ProcessPool:
    """The one run pool of this worker process, on its own event-loop thread, started lazily."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pool: CeleryRunPool | None = None

    def get(self) -> CeleryRunPool:
        with self._lock:
            if self.pool is None:
                loop = serve.new_event_loop()
                threading.Thread(target=loop.run_forever, name="agent-runs", daemon=True).start()
                pool = CeleryRunPool()
                asyncio.run_coroutine_threadsafe(pool.start(), loop).result(timeout=30)
                self.pool = pool
            return self.pool

    def shutdown(self) -> None:
        with self._lock:
            pool, self.pool = self.pool, None
        if pool is not None and pool.loop is not None:
            asyncio.run_coroutine_threadsafe(pool.stop(), pool.loop).result(timeout=60)
            pool.loop.call_soon_threadsafe(pool.loop.stop)


_process = _ProcessPool()


@app.task(name=RUN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_task(task_id: str) -> str:
    """Run one task to its end on this process's loop; the message is acknowledged afterwards."""
    pool = _process.get()
    assert pool.loop is not None
    outcome = asyncio.run_coroutine_threadsafe(pool.run_delivered(task_id), pool.loop).result()
    log.info("task %s: %s", task_id, outcome)
    return outcome


@control_command(args=[("task_id", str)], signature="<task_id>")
def stop_run(state, task_id: str) -> dict[str, str]:
    """Cancel the run of `task_id` if this worker holds it (every worker gets the broadcast)."""
    pool = _process.pool
    if pool is not None and task_id in pool.running:
        pool.cancel(task_id)
        return {"ok": "stopping"}
    return {"ok": "not here"}


@signals.worker_init.connect
def _check_keys(**_: object) -> None:
    """Refuse to start with keys that cannot read the stored secrets, or an unknown event loop (as
    the web server does)."""
    from console import crypto

    try:
        crypto.check_stored_secrets()
    except crypto.KeysDoNotMatchData as exc:
        raise SystemExit(f"Refusing to start: {exc}") from None
    serve.loop_choice()  # a wrong SERVER_EVENT_LOOP stops the worker now, not at its first run
    heap.gc_choice()  # and so does a wrong SERVER_GC


@signals.worker_ready.connect
def _warm_up(**_: object) -> None:
    """Import the model runtime, settle the collector (console/heap.py), then start the run pool,
    all before the first delivery."""
    heap.settle(preload=WORKER_IMPORTS)
    _process.get()


@signals.worker_process_init.connect
def _settle_pool_process(**_: object) -> None:
    """A prefork pool's child runs the agents: it preloads and settles its own collector too."""
    heap.settle(preload=WORKER_IMPORTS)


@signals.worker_shutdown.connect
def _shutdown(**_: object) -> None:
    _process.shutdown()

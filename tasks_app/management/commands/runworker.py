"""`python manage.py runworker`: run the worker pool alone (the server then uses TASK_EXECUTION=none)."""

from __future__ import annotations

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from console import crypto, heap, serve
from tasks_app.runtime import WORKER_IMPORTS
from tasks_app.runtime.worker import WorkerPool


class Command(BaseCommand):
    help = "Run the task worker pool in this process until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=None)
        parser.add_argument("--worker-id", default=None)

    def handle(self, *args, **opts) -> None:
        try:
            heap.gc_choice()
        except SystemExit as exc:
            raise CommandError(f"Refusing to start: {exc}") from None
        try:
            crypto.check_stored_secrets()
        except crypto.KeysDoNotMatchData as exc:
            raise CommandError(f"Refusing to start: {exc}") from None
        heap.settle(preload=WORKER_IMPORTS)  # before the pool takes its first task (console/heap.py)
        asyncio.run(self._main(opts["worker_id"], opts["concurrency"]), loop_factory=serve.new_event_loop)

    async def _main(self, worker_id: str | None, concurrency: int | None) -> None:
        pool = WorkerPool(worker_id, concurrency)
        await pool.start()
        self.stdout.write(f"worker {pool.worker_id} running; Ctrl-C to stop")
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await pool.stop()

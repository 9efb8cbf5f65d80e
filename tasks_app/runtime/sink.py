"""Buffering a run's output into the task's logs: text deltas coalesced, writes batched.

Nothing is written per token: chunks gather for CHUNK_COALESCE_SECONDS, and every other event
first flushes the text before it, so the log keeps the order the model produced. A run that ends
cuts the gathering short: its last text is written at once, not when the window would have closed
(a short answer used to wait out the whole window before its task could finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from django.conf import settings

from tasks_app import actions
from tasks_app.runtime.mapping import CHUNK, Batch, Output

log = logging.getLogger(__name__)


class EventSink:
    def __init__(self, task_id: str, secrets: list[str], worker_id: str | None = None) -> None:
        self.task_id = task_id
        self.secrets = secrets
        self.worker_id = worker_id
        self._batch = Batch()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()  # set by close(): no more gathering, write what is buffered
        self._writer = asyncio.create_task(self._run())

    def write(self, outputs: list[Output]) -> None:
        """What the mapping made of one library event, in order."""
        for output in outputs:
            self._batch.add(output)
        if outputs:
            self._wake.set()

    def chunk(self, text: str) -> None:
        if text:
            self._batch.add((CHUNK, text, None))
            self._wake.set()

    def event(self, type_: str, data: Any, activity: tuple[str, dict[str, Any]] | None = None) -> None:
        self._batch.add((type_, data, activity))
        self._wake.set()

    def activity(self, kind: str, data: dict[str, Any]) -> None:
        self._batch.add_entry(kind, data)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self._closing.is_set():
                return  # what is left goes with close() or drain()
            if self._batch.only_text:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), settings.CHUNK_COALESCE_SECONDS)
                if self._closing.is_set():
                    return
            self._wake.clear()
            await self._write()

    async def _write(self) -> None:
        events, activity = self._batch.take()
        if not events and not activity:
            return
        await actions.arecord_progress(
            self.task_id, events=events, activity=activity, secrets=self.secrets, worker_id=self.worker_id
        )

    async def close(self) -> None:
        """Write everything still buffered; safe to call from a cancelled run's cleanup."""
        await self._stop()
        await asyncio.shield(self._write())

    async def drain(self) -> tuple[list[tuple[str, Any]], list[tuple[str, dict[str, Any]]]]:
        """Stop, and hand over what is still buffered (events, activity) instead of writing it.

        The run's finish stores them in its own transaction: one write at the end of a run, not two.
        Whatever the writer had already started is committed first, so the order stays the model's.
        """
        await self._stop()
        return self._batch.take()

    async def _stop(self) -> None:
        self._closing.set()
        self._wake.set()
        try:
            await asyncio.shield(self._writer)
        except Exception:
            log.exception("event writer for task %s failed", self.task_id)

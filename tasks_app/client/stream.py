"""Live task events over SSE, sync and async, surviving dropped connections.

Both iterators yield each event as it arrives. When the connection drops (or the server closes
it before `task_finished`) they reconnect with `Last-Event-ID` set to the last sequence number
seen, so the server resumes right after it: nothing is repeated and nothing is skipped. They end
when the server closes the stream after `task_finished`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from tasks_app.client.configuration import Configuration
from tasks_app.client.exceptions import ModuleException
from tasks_app.client.models.events import TaskUpdateEvent, TaskUpdateEventType
from tasks_app.client.transport import auth_headers, server_message, ssl_context

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 5.0
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """The line-level SSE parser of the HTML spec (fields `event`, `data`, `id`; comments skipped)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            sse = ServerSentEvent(data="\n".join(self._data), event=self._event or "message", id=self.last_id)
            self._event, self._data = "", []
            return sse
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None


class Cursor:
    """Where a stream is: the last sequence number seen, and whether the task finished."""

    def __init__(self, cfg: Configuration, task_id: str, make_task: Callable[[dict[str, Any]], Any]) -> None:
        self.cfg = cfg
        self.task_id = task_id
        self.url = cfg.events_url(task_id)
        self.make_task = make_task
        self.last_seq: int | None = None
        self.finished = False
        self.failures = 0

    def headers(self) -> dict[str, str]:
        headers = {
            **auth_headers(self.cfg, "stream task events"),
            "accept": "text/event-stream",
            "cache-control": "no-store",
        }
        if self.last_seq is not None:
            headers["last-event-id"] = str(self.last_seq)
        return headers

    @staticmethod
    def is_stream(response: httpx.Response) -> bool:
        return response.status_code == 200 and "text/event-stream" in response.headers.get("content-type", "")

    def refused(self, response: httpx.Response) -> str:
        """A response that is not an event stream: the reason to retry, or raise when retrying cannot help."""
        if response.status_code in RETRYABLE_STATUSES:
            return f"HTTP {response.status_code} from {self.url}"
        if not response.is_success:
            raise ModuleException(response.status_code, server_message(response))
        content_type = response.headers.get("content-type") or "no content type"
        raise ModuleException(
            502,
            f"Failed to stream task events - expected text/event-stream from {self.url}, got {content_type}",
        )

    def accept(self, sse: ServerSentEvent) -> TaskUpdateEvent | None:
        """The event to yield for a frame, or None for a duplicate or a frame that is no event."""
        seq = int(sse.id) if sse.id is not None and sse.id.isdigit() else None
        if seq is not None:
            if self.last_seq is not None and seq <= self.last_seq:
                return None  # already delivered before a reconnect
            self.last_seq = seq
            self.failures = 0
        event = self._parse(sse.data, seq)
        if event is not None:
            self.finished = event.type == TaskUpdateEventType.TaskFinished
        return event

    def _parse(self, raw: str, seq: int | None) -> TaskUpdateEvent | None:
        try:
            payload = json.loads(raw)
        except ValueError:
            log.warning("task %s: skipping an event that is not JSON: %.200s", self.task_id, raw)
            return None
        if not isinstance(payload, dict):
            log.warning("task %s: skipping an event that is not an object: %.200s", self.task_id, raw)
            return None
        payload.setdefault("id", seq)
        data = payload.get("data")
        if str(payload.get("type", "")).startswith("task") and isinstance(data, dict):
            try:
                payload["data"] = self.make_task(data)
            except (ValidationError, ModuleException) as exc:
                log.warning(
                    "task %s: %s data is not a Task (%s); kept as a dict", self.task_id, payload["type"], exc
                )
        try:
            return TaskUpdateEvent.model_validate(payload)
        except ValidationError as exc:
            log.warning("task %s: skipping a malformed event (%s)", self.task_id, exc.errors()[0]["msg"])
            return None

    def retry_delay(self, reason: str) -> float:
        """Count a failed connection; the pause before the next one, or raise once attempts run out."""
        self.failures += 1
        if self.failures > self.cfg.stream_reconnect_attempts:
            raise ModuleException(
                503,
                f"Failed to stream task events - lost the stream at {self.url} and "
                f"{self.cfg.stream_reconnect_attempts} reconnects failed (last: {reason})",
            )
        delay = min(MAX_RETRY_DELAY, 0.2 * 2 ** (self.failures - 1))
        log.info(
            "task %s: event stream interrupted (%s); resuming after %s in %.1fs",
            self.task_id,
            reason,
            self.last_seq,
            delay,
        )
        return delay

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.cfg.timeout, read=self.cfg.stream_read_timeout)


def iter_events(cursor: Cursor) -> Iterator[TaskUpdateEvent]:
    """Yield events as they arrive, reconnecting until the server closes after task_finished."""
    with httpx.Client(timeout=cursor.timeout(), verify=ssl_context()) as client:
        while True:
            try:
                with client.stream("GET", cursor.url, headers=cursor.headers()) as response:
                    if not cursor.is_stream(response):
                        response.read()
                        reason = cursor.refused(response)
                    else:
                        decoder = SSEDecoder()
                        for line in response.iter_lines():
                            sse = decoder.decode(line)
                            event = cursor.accept(sse) if sse is not None else None
                            if event is not None:
                                yield event
                        if cursor.finished:
                            return
                        reason = "the server closed the stream before task_finished"
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            time.sleep(cursor.retry_delay(reason))


async def aiter_events(cursor: Cursor) -> AsyncIterator[TaskUpdateEvent]:
    """The async twin of iter_events."""
    async with httpx.AsyncClient(timeout=cursor.timeout(), verify=ssl_context()) as client:
        while True:
            try:
                async with client.stream("GET", cursor.url, headers=cursor.headers()) as response:
                    if not cursor.is_stream(response):
                        await response.aread()
                        reason = cursor.refused(response)
                    else:
                        decoder = SSEDecoder()
                        async for line in response.aiter_lines():
                            sse = decoder.decode(line)
                            event = cursor.accept(sse) if sse is not None else None
                            if event is not None:
                                yield event
                        if cursor.finished:
                            return
                        reason = "the server closed the stream before task_finished"
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            await asyncio.sleep(cursor.retry_delay(reason))

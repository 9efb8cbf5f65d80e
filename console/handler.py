"""Django's ASGI handler, letting go of a request's thread once its response is a long stream.

Django runs every request's thread-sensitive work (the `request_started` receivers, sync middleware,
the ORM calls of async views) on one thread of its own, kept until the response is fully sent.
For an event stream that is a thread, plus the database connection opened on it, for as long as
the stream stays open. Here that thread is started on first use as before, and released, with its
connections closed, when an async streaming response starts: by then the view and the middleware
are done, and the stream reads through the shared pool in `tasks_app.sse`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpResponseBase


class RequestThread(Executor):
    """One worker thread for a request's thread-sensitive calls, started when first needed.

    `shutdown()` lets the thread go; a later call starts a new one (the request's end still runs
    Django's `request_finished` receivers).
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self.db_turn = _DatabaseTurn()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


_request_thread: ContextVar[RequestThread] = ContextVar("request_thread")
_turns: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


class _DatabaseTurn:
    """One request's share of WEB_DB_CONNECTIONS (a request thread may hold one connection).

    Released when the request ends or, for a long stream, as soon as its thread lets go.
    """

    def __init__(self) -> None:
        self._sem: asyncio.Semaphore | None = None

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        sem = _turns.get(loop)
        if sem is None:
            sem = _turns[loop] = asyncio.Semaphore(settings.WEB_DB_CONNECTIONS)
        await sem.acquire()
        self._sem = sem

    def release(self) -> None:
        sem, self._sem = self._sem, None
        if sem is not None:
            sem.release()


class StreamingASGIHandler(ASGIHandler):
    """Django's handler, with each request's thread released while a long response streams."""

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        thread = RequestThread()
        token = _request_thread.set(thread)
        # A burst of requests waits for a turn instead of opening more connections than the database takes.
        await thread.db_turn.acquire()
        try:
            # The outermost context decides: Django's own ThreadSensitiveContext inside reuses ours.
            async with ThreadSensitiveContext(executor=thread):
                await super().__call__(scope, receive, send)
        finally:
            _request_thread.reset(token)
            thread.shutdown(wait=False)  # not joined here: the loop must not wait on a thread
            thread.db_turn.release()

    async def send_response(self, response: HttpResponseBase, send: Callable) -> None:
        if response.streaming and response.is_async:
            await sync_to_async(connections.close_all)()  # on the request's thread: its connections
            _request_thread.get().shutdown(wait=False)
            _request_thread.get().db_turn.release()
        await super().send_response(response, send)

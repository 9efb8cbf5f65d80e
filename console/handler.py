"""Django's ASGI handler, with long-lived request threads and a stream's thread let go as it starts.

Django runs every request's thread-sensitive work (the `request_started` receivers, sync middleware,
sync views, the ORM calls of async views) on one thread of its own, kept until the response is fully
sent. Stock Django starts a new thread per request, and the request opens a new database connection
on it: ~2 ms of CPU per request with SQLite before any work. Here a request borrows one of at most
WEB_DB_CONNECTIONS long-lived single-thread lanes for its life and gives it back at its end; the
lane's connection stays open for the next request (CONN_MAX_AGE, with health checks). Semantics are
Django's: one thread per request at a time, and one request per thread at a time.

What a request leaves behind must not reach the next: Django's `close_old_connections` (at request
start and end, on the lane) closes broken or obsolete connections, and a lane whose connection is
still inside a transaction when its request ends is retired, its connection closed (rolled back),
instead of given back.

An async streaming response (an event stream) gives its lane back as soon as it starts: the view
and the middleware are done by then, and the stream reads through the shared pool in
`tasks_app.sse`. What the request does after that (closing the response, and whatever its body
still runs thread-sensitively) runs on a thread of its own, outside the lanes: one of a few kept
idle threads, given back clean at the stream's end like a lane.

The event loop waits a moment for each call it gives a lane (REQUEST_CALL_WAIT_MS, on by default
with SQLite; see `hand_over`) instead of running on beside it: both would otherwise take turns at the
GIL at every SQLite statement. A call that outlasts the wait goes on without the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import closing
from contextvars import ContextVar
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.signals import request_finished
from django.db import close_old_connections, connections, reset_queries
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

log = logging.getLogger(__name__)


class _Lane(ThreadPoolExecutor):
    """A long-lived request thread. `finished_due`: its last request's close_old_connections (a
    request_finished receiver), left to the start of the lane's next call
    (`StreamingASGIHandler.close_response`)."""

    finished_due: Callable[[], Any] | None = None


class _Lanes:
    """The idle long-lived request threads of this process (each a one-thread executor).

    `keep`: how many idle lanes are kept; one given back beyond that is shut down instead.
    """

    def __init__(self, name: str = "request", keep: int | None = None) -> None:
        self._idle: list[_Lane] = []
        self._lock = threading.Lock()
        self._name = name
        self._keep = keep

    def take(self) -> _Lane:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Lane(max_workers=1, thread_name_prefix=self._name)

    def give_back(self, lane: _Lane) -> None:
        with self._lock:
            if self._keep is None or len(self._idle) < self._keep:
                self._idle.append(lane)
                return
        lane.shutdown(wait=False)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


lanes = _Lanes()
# A stream's thread after its lane is let go (see the module doc). Kept too, a few: starting a thread
# per stream (Thread.start waits for the thread on the event loop) was ~4 % of the loop's CPU at c32.
tails = _Lanes("request-tail", keep=64)


def _inside_a_transaction(conn: Any) -> bool:
    return conn.in_atomic_block or (conn.connection is not None and not conn.get_autocommit())


def _in_a_transaction() -> bool:
    """Whether a connection of this thread is inside a transaction (a look; nothing is closed)."""
    return any(_inside_a_transaction(conn) for conn in connections.all(initialized_only=True))


def _leaves_a_transaction_open() -> bool:
    """Whether a connection of this thread is still inside a transaction; if so, close it (rollback).

    Runs on the request's lane. A lane that answers True is retired, not reused: Django's
    bookkeeping of an atomic block left open cannot be reset safely from outside it.
    """
    dirty = False
    for conn in connections.all(initialized_only=True):
        if _inside_a_transaction(conn):
            dirty = True
            conn.close()
    return dirty


class RequestThread(Executor):
    """A request's thread-sensitive executor: a borrowed lane, or after `let_go()` a thread of its own."""

    def __init__(self) -> None:
        self._lane: _Lane | None = None
        self._spare: _Lane | None = None
        self._turn: asyncio.Semaphore | None = None
        self.dirty = False  # set on the lane when the request left a transaction open
        # request_started's receivers, run at the start of the request's first call on its thread
        self.prelude: Callable[[], Any] | None = None
        # whether the lane's last call ended inside a transaction (None: no call has run on it yet)
        self.left_open: bool | None = None
        # whether the lane's last call left its connections as request_finished's receivers would
        # leave them (none to close: see `_settled`)
        self.settled = False
        self._last_call: Future | None = None  # the lane's last call (loop thread only)

    async def borrow(self) -> None:
        """Wait for a turn (at most WEB_DB_CONNECTIONS at once), then take a lane."""
        loop = asyncio.get_running_loop()
        sem = _turns.get(loop)
        if sem is None:
            sem = _turns[loop] = asyncio.Semaphore(settings.WEB_DB_CONNECTIONS)
        await sem.acquire()
        self._turn = sem
        self._lane = lanes.take()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        prelude, self.prelude = self.prelude, None
        if self._lane is not None:
            lane = self._lane
            finished, lane.finished_due = lane.finished_due, None  # the last request's, if left to now
            call = self._last_call = lane.submit(self._on_lane, finished, prelude, fn, *args, **kwargs)
            if prelude is not None or finished is not None:  # a call cancelled before it ran
                call.add_done_callback(functools.partial(self._still_due, finished, prelude))
            if settings.REQUEST_CALL_WAIT_MS:
                hand_over(call, settings.REQUEST_CALL_WAIT_MS / 1000)
            return call
        # (A prelude still due here is dropped: its receivers look after the lane's connections,
        # and every path gives the lane back only after a call on it, so none is due by now.)
        # The stream's own thread for the rest of its life: its body may still use the database
        # (exports, a worker stream's detach), and one request's calls stay on one thread.
        if self._spare is None:
            self._spare = tails.take()
        return self._spare.submit(fn, *args, **kwargs)

    def _on_lane(
        self,
        finished: Callable[[], Any] | None,
        prelude: Callable[[], Any] | None,
        fn: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """A call on the lane: the last request's request_finished receivers first if left to now,
        then request_started's if still due; afterwards a look at whether it left a transaction open
        and its connections settled (so a request can let its lane go, or close, without a hop)."""
        try:
            if finished is not None:
                _run_receivers(finished, "request_finished")
            if prelude is not None:
                _run_receivers(prelude, "request_started")
            return fn(*args, **kwargs)
        finally:
            self.left_open = _in_a_transaction()
            self.settled = not self.left_open and _settled()

    def _still_due(
        self, finished: Callable[[], Any] | None, prelude: Callable[[], Any] | None, call: Future
    ) -> None:
        if not call.cancelled():
            return
        if prelude is not None and self.prelude is None:
            self.prelude = prelude
        if finished is not None and self._lane is not None and self._lane.finished_due is None:
            self._lane.finished_due = finished

    def idle_and_clean(self) -> bool:
        """Whether the lane has no call queued or running and its last call left no transaction open
        (then the lane may be let go without a call to look again)."""
        return (
            self.prelude is None
            and self.left_open is False
            and (self._last_call is not None and self._last_call.done())
        )

    def finish_later(self, receivers: Callable[[], Any]) -> bool:
        """Leave request_finished's thread-bound receivers to the lane's next call, if they may wait.

        They may when the lane is idle and clean (`idle_and_clean`) and its last call left every
        connection as they would leave it (`settled`): what they would do then is only bookkeeping
        that the next request's own request_started receivers repeat, on the same thread, before any
        of its work. `_check_lane` is not among them: being clean is what it would check. Returns
        False (nothing changed) otherwise.
        """
        if self._lane is None or not (self.idle_and_clean() and self.settled):
            return False
        self._lane.finished_due = receivers
        return True

    def let_go(self) -> None:
        """Give the lane back (or retire it if its request left a transaction open) and the turn."""
        lane, self._lane = self._lane, None
        if lane is not None:
            if self.dirty:
                lane.shutdown(wait=False)
            else:
                lanes.give_back(lane)
        sem, self._turn = self._turn, None
        if sem is not None:
            sem.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.let_go()
        spare, self._spare = self._spare, None
        if spare is not None:
            # Queued behind the request's own calls on that thread: given back only once they are
            # done, and only clean (no transaction left open), as a lane is.
            retired = spare.submit(_retire_tail, spare)
            if wait:
                retired.result()


def hand_over(call: Future, seconds: float) -> None:
    """Block the calling thread (the event loop's) until `call` is done, at most `seconds`.

    Why: Python's sqlite3 lets the GIL go around every step of every statement, and under load the
    loop's thread took it at each of those moments; the request's thread then waited up to the
    switch interval (5 ms) to get it back (docs/benchmarks.md, twelfth round, measures what these
    handovers cost). A loop blocked here wants no GIL, so the call runs straight through. A call
    still running after `seconds` (a write lock held, outbound I/O, a call that needs the loop) goes
    on without the loop, and the loop waits for no other call until it has had a turn: a burst of
    slow calls holds it up once, not once per call.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop in _waited_out:
        return
    done, _ = futures.wait((call,), timeout=seconds)
    if not done and loop is not None:
        _waited_out.add(loop)
        loop.call_soon(_waited_out.discard, loop)


# loops whose wait timed out this turn (weak: a loop closed before its turn came is not kept)
_waited_out: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _run_receivers(receivers: Callable[[], Any], signal: str) -> None:
    """request_started's (or a last request's request_finished) receivers, connection upkeep: a
    failure is logged, and the request's call runs regardless, so its close still sends
    request_finished."""
    try:
        receivers()
    except Exception:
        log.exception("%s's receivers failed", signal)


def _settled() -> bool:
    """Whether Django's `close_old_connections` would close none of this thread's connections now:
    none is broken, in error, out of autocommit or past its CONN_MAX_AGE (a CONN_MAX_AGE of 0 is
    past at once: such a connection is closed at its request's end, as configured)."""
    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.errors_occurred or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
            return False
        if conn.close_at is not None and now >= conn.close_at:
            return False
    return True


def _retire_tail(tail: ThreadPoolExecutor) -> None:
    """On a stream's thread, after its last call: back to `tails` with no connection kept (a kept
    thread must not hold connections beyond WEB_DB_CONNECTIONS), or shut down if left dirty."""
    if _leaves_a_transaction_open():
        tail.shutdown(wait=False)
    else:
        connections.close_all()
        tails.give_back(tail)


# request_started's receivers that may run with the request's first call on its thread: Django's own,
# which only look after this thread's connections. With any other receiver connected, the signal is
# sent as Django sends it (`asend`, in the request's context, a call of its own).
_DEFERRABLE_STARTED = frozenset({reset_queries, close_old_connections})


def _started_receivers_deferrable(sender: type) -> bool:
    sync_receivers, async_receivers = signals.request_started._live_receivers(sender)
    return not async_receivers and all(r in _DEFERRABLE_STARTED for r in sync_receivers)


def _closers_run_anywhere(response: HttpResponseBase) -> bool:
    """Whether the response's resource closers are only its request's own `close`, on a request with
    no uploaded file: that closes the request's body, which Django's handler closes on the loop too."""
    for closer in response._resource_closers:
        request = getattr(closer, "__self__", None)
        if not isinstance(request, HttpRequest) or closer.__func__ is not type(request).close:
            return False
        if request.__dict__.get("_files"):
            return False
    return True


def _close_resources(response: HttpResponseBase) -> None:
    """`HttpResponseBase.close` (Django 6.1) but for request_finished, which the caller sees to."""
    for closer in response._resource_closers:
        with contextlib.suppress(Exception):  # as Django's close: one failing does not stop the others
            closer()
    response._resource_closers.clear()
    response.closed = True


# request_finished's receivers that may wait for the lane's next call, or run on the loop when the
# request has no thread left (StreamingASGIHandler.close_response): they only look after the calling
# thread's connections and caches, and the request's URLconf.
_DEFERRABLE_FINISHED = frozenset({close_old_connections, close_caches, base.reset_urlconf})


def _finished_receivers_deferrable(sender: type) -> bool:
    sync_receivers, async_receivers = signals.request_finished._live_receivers(sender)
    return not async_receivers and all(r in _DEFERRABLE_FINISHED or r is _check_lane for r in sync_receivers)


_request_thread: ContextVar[RequestThread] = ContextVar("request_thread")
_turns: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


@receiver(request_finished, dispatch_uid="console.handler.check_lane")
def _check_lane(**kwargs: Any) -> None:
    """At a request's end, on its lane (after close_old_connections): no transaction may carry over."""
    thread = _request_thread.get(None)
    if thread is not None and thread._lane is not None and _leaves_a_transaction_open():
        thread.dirty = True


class _Inline:
    """Django's `MiddlewareMixin`, with an async request's hooks called inline on the event loop.

    Stock `MiddlewareMixin.__acall__` sends `process_request` and `process_response` each to the
    request's thread (a hop: ~80 us of CPU, two thread wake-ups and a GIL hand-over); with Django's
    four header middleware that was 6 hops a request, 12 of an agent run's 21 (create + stream).
    Only for middleware whose hooks read the request and settings and set headers: no database,
    no I/O, nothing that may block the loop.
    """

    async def __acall__(self, request: Any) -> Any:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


# Django's middleware that only read the request and set headers (checked against Django 6.1's code):
# these run inline (`_Inline`) when listed in MIDDLEWARE; the list itself stays Django's.
INLINE_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
_inline_classes: dict[str, type] = {}
_django_import_string = base.import_string


_loading = threading.Lock()  # one handler's load_middleware at a time swaps Django's import_string


def _import_middleware(path: str) -> Any:
    """What Django's `load_middleware` imports, the INLINE_MIDDLEWARE as `_Inline` subclasses.

    Only while the class is the plain `MiddlewareMixin` kind this was checked against: one with its
    own `__acall__` or async hooks (a later Django) is left as it is.
    """
    found = _django_import_string(path)
    if path not in INLINE_MIDDLEWARE or not _plain_mixin(found):
        return found
    if path not in _inline_classes:
        _inline_classes[path] = type(found.__name__, (_Inline, found), {"__module__": __name__})
    return _inline_classes[path]


def _plain_mixin(cls: type) -> bool:
    """A `MiddlewareMixin` with Django's own `__acall__` and sync hooks only."""
    from django.utils.deprecation import MiddlewareMixin

    if not issubclass(cls, MiddlewareMixin) or cls.__acall__ is not MiddlewareMixin.__acall__:
        return False
    hooks = [getattr(cls, name, None) for name in ("process_request", "process_response")]
    return not any(hook is not None and asyncio.iscoroutinefunction(hook) for hook in hooks) and not any(
        name.startswith("aprocess_") for name in dir(cls)
    )


class RequestProcessed(Exception):
    """Django's `handle` defines this class anew on each request (its own control flow, to end the
    request's task group once the response is sent); one class for all is the same signal, without
    a class built per request (0.5 % of the server's CPU per agent run)."""


class StreamingASGIHandler(ASGIHandler):
    """Django's handler on long-lived request threads, a stream's thread let go as it starts."""

    def load_middleware(self, is_async: bool = False) -> None:
        """Django's chain from settings.MIDDLEWARE, its header-only middleware run inline (`_Inline`).

        Django imports each middleware through `django.core.handlers.base.import_string`; for the
        length of this call that name resolves INLINE_MIDDLEWARE to their `_Inline` subclasses. Any
        other handler loading meanwhile would get them too, which changes nothing in sync mode.
        """
        with _loading:
            base.import_string = _import_middleware
            try:
                super().load_middleware(is_async)
            finally:
                base.import_string = _django_import_string

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        thread = RequestThread()
        token = _request_thread.set(thread)
        # A burst of requests waits for a turn instead of opening more connections than the database takes.
        await thread.borrow()
        try:
            # The outermost context decides: Django's own ThreadSensitiveContext inside reuses ours.
            async with ThreadSensitiveContext(executor=thread):
                await super().__call__(scope, receive, send)
        finally:
            _request_thread.reset(token)
            thread.shutdown(wait=False)  # not joined here: the loop must not wait on a thread

    async def handle(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """Django's `ASGIHandler.handle` (6.1), but request_started is not a thread hop of its own.

        Django sends request_started with `asend`, which runs its sync receivers (reset_queries,
        close_old_connections) in a call of their own on the request's thread, before anything
        else of the request runs there: a hop (~0.1-0.3 ms of CPU, two wake-ups) per request.
        Here, while those two are its only receivers, they run at the start of the request's first
        call on that thread instead (the view, or at the latest the response's close), still before
        any database use of the request, on the same thread, with the same arguments. They only look
        after the thread's own connections, so the request's context is not theirs to see. With any
        other receiver connected the signal is sent as Django sends it. The response's close is
        `close_response`, and `RequestProcessed` is defined once, not per request. Everything else is
        Django's, line for line; tests/test_request_path.py pins the Django code this copies.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return

        with closing(body_file):
            # Request is complete and can be served.
            set_script_prefix(get_script_prefix(scope))
            if _started_receivers_deferrable(self.__class__):
                _request_thread.get().prelude = functools.partial(
                    signals.request_started.send, sender=self.__class__, scope=scope
                )
            else:
                await signals.request_started.asend(sender=self.__class__, scope=scope)
            # Get the request and check for basic issues.
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                body_file.close()
                await self.send_response(error_response, send)
                await sync_to_async(error_response.close)()
                return

            response = None
            try:
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self.listen_for_disconnect(receive))
                        response = await self.run_get_response(request)
                        await self.send_response(response, send)
                        raise RequestProcessed
                except* (RequestProcessed, RequestAborted):
                    pass
            except BaseExceptionGroup as exception_group:
                if len(exception_group.exceptions) == 1:
                    raise exception_group.exceptions[0]  # noqa: B904 (Django's own line)
                raise

            if response is None:
                await signals.request_finished.asend(sender=self.__class__)
            else:
                await self.close_response(response)

    async def close_response(self, response: HttpResponseBase) -> None:
        """Django's `await sync_to_async(response.close)()`, without the hop where it changes nothing.

        A response's close runs its resource closers, then sends request_finished, whose receivers
        are Django's (close_old_connections: the thread's database connections; close_caches and
        reset_urlconf: state of the request's context) and `_check_lane`. While those are the only
        receivers and the only closer is the request's own (`_closers_run_anywhere`):
        - on a lane whose last call left it clean and settled (`RequestThread.finish_later`),
          close_old_connections runs at the start of the lane's next call, before the next request's
          own request_started receivers (which repeat it), on the same thread; the other two run here,
          in the request's context: one hop less per API call (a create);
        - a stream that let its lane go and ran nothing on a thread since has no thread whose
          connections they would find: the close runs here, on the loop, and no thread is woken or
          kept for it (an event stream).
        Otherwise, or with any other receiver connected, it is Django's call as it was.
        """
        thread = _request_thread.get()
        if _closers_run_anywhere(response) and _finished_receivers_deferrable(self.__class__):
            if thread._lane is None and thread._spare is None:
                response.close()
                return
            if thread.finish_later(
                functools.partial(close_old_connections, signal=request_finished, sender=self.__class__)
            ):
                _close_resources(response)
                # the receivers whose state is the request's context, not its thread's: here, in it
                close_caches(signal=request_finished, sender=self.__class__)
                base.reset_urlconf(signal=request_finished, sender=self.__class__)
                return
        await sync_to_async(response.close)()

    async def send_response(self, response: HttpResponseBase, send: Callable) -> None:
        if response.streaming and response.is_async:
            thread = _request_thread.get()
            if thread._lane is not None:
                if thread.idle_and_clean():
                    thread.dirty = False  # the lane's last call looked: no hop to look again
                else:
                    thread.dirty = await sync_to_async(_leaves_a_transaction_open)()  # on the lane
                thread.let_go()
        await super().send_response(response, send)

"""The API request path: long-lived request threads keeping their connection, no transaction carried
from one request to the next, cached API callers forgotten at once on revoke / role change /
deactivation, and no session, CSRF, sign-in or messages middleware on the API while every console
form keeps its CSRF check."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import re
import threading
import time
import uuid
from concurrent.futures import Future

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.test import Client
from django.urls import path, resolve

from console import handler as handler_module
from console import members
from console.access import actor_for_membership
from console.handler import RequestThread, StreamingASGIHandler
from console.models import ApiKey, Organization
from tests.console_helpers import PASSWORD, signed_in
from tests.live import LiveServer, server_env

# ---- in process: the handler's lanes, driven over ASGI ------------------------------------------


_this_thread = threading.local()


def _thread_token() -> str:
    """This thread's own mark (an ident may be reused by a thread started after this one ended)."""
    if not hasattr(_this_thread, "token"):
        _this_thread.token = uuid.uuid4().hex
    return _this_thread.token


def _leave_a_transaction_open(request: HttpRequest, name: str) -> JsonResponse:
    """A view that enters a transaction, writes, and never leaves it (as a bug would)."""
    transaction.atomic().__enter__()
    Organization.objects.create(name=name)
    return JsonResponse({"thread": _thread_token()})


def _what_the_connection_holds(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse(
        {
            "thread": _thread_token(),
            "connection": id(connection.connection) if connection.connection else None,
            "in_atomic_block": connection.in_atomic_block,
            "autocommit": connection.get_autocommit(),
            "row_exists": Organization.objects.filter(name=name).exists(),
            "connection_after": id(connection.connection),
        }
    )


def _stream_from_its_thread(request: HttpRequest, name: str) -> StreamingHttpResponse:
    """An event stream whose body uses the database on the stream's own thread (as exports do)."""

    async def body():
        yield json.dumps(await sync_to_async(_what_the_connection_holds_now)(name))

    return StreamingHttpResponse(body(), content_type="text/event-stream")


def _what_the_connection_holds_now(name: str) -> dict:
    return {
        "connection_before": id(connection.connection) if connection.connection else None,
        "thread": _thread_token(),
        "ident": threading.get_ident(),
        "in_atomic_block": connection.in_atomic_block,
        "row_exists": Organization.objects.filter(name=name).exists(),
    }


def _stream_that_leaves_a_transaction_open(request: HttpRequest, name: str) -> StreamingHttpResponse:
    async def body():
        yield json.dumps(await sync_to_async(_open_and_write)(name))

    return StreamingHttpResponse(body(), content_type="text/event-stream")


def _open_and_write(name: str) -> dict:
    transaction.atomic().__enter__()
    Organization.objects.create(name=name)
    return {"thread": _thread_token(), "ident": threading.get_ident()}


def _stream_after_leaving_a_transaction_open(request: HttpRequest, name: str) -> StreamingHttpResponse:
    """A streaming view that enters a transaction on its lane, writes, and never leaves it."""
    transaction.atomic().__enter__()
    Organization.objects.create(name=name)
    lane = _thread_token()

    async def body():
        yield json.dumps({"thread": lane})

    return StreamingHttpResponse(body(), content_type="text/event-stream")


def _queries_marked(request: HttpRequest) -> JsonResponse:
    """Whether this lane's connection still has the last request's mark in its query log (Django's
    reset_queries, a request_started receiver, clears it), then marks it."""
    marked = any(q.get("sql") == MARK for q in connection.queries_log)
    connection.queries_log.append({"sql": MARK, "time": "0"})
    return JsonResponse({"marked": marked, "thread": _thread_token()})


MARK = "-- marked by the last request"
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def _request_id(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"request_id": REQUEST_ID.get()})


async def _answered_on_the_loop(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"on": "loop"})


def _look_then_age_the_connection(request: HttpRequest) -> JsonResponse:
    """A view after which its connection is past CONN_MAX_AGE: request_finished must close it now."""
    Organization.objects.exists()
    connection.close_at = time.monotonic() - 1
    return JsonResponse({"thread": _thread_token()})


class _Body:
    """A stream's body with a resource of its own that its response must close (as a file's)."""

    closed = False

    def __aiter__(self):
        return self._chunks()

    async def _chunks(self):
        yield b"file body"

    def close(self) -> None:
        _Body.closed = True


def _a_file(request: HttpRequest) -> StreamingHttpResponse:
    _Body.closed = False
    return StreamingHttpResponse(_Body())


def _files_posted(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"files": sorted(request.FILES)})


def _quiet_stream(request: HttpRequest) -> StreamingHttpResponse:
    """An event stream whose body needs no thread (as the API's SSE streams)."""

    async def body():
        yield "data: quiet\n\n"

    return StreamingHttpResponse(body(), content_type="text/event-stream")


_CALL_STARTED, _RELEASED_BY_THE_LOOP = threading.Event(), threading.Event()


def _wait_for_the_loop(request: HttpRequest) -> JsonResponse:
    """A call that only the event loop can end: it waits for an event a coroutine on the loop sets."""
    _CALL_STARTED.set()
    return JsonResponse({"released": _RELEASED_BY_THE_LOOP.wait(10)})


def _call_into_the_loop(request: HttpRequest) -> JsonResponse:
    """A call that runs a coroutine on the request's event loop and waits for it (as OAuth views do)."""
    return JsonResponse({"ran": async_to_sync(_on_the_loop)()})


async def _on_the_loop() -> str:
    await asyncio.sleep(0)
    return "on the loop"


urlpatterns = [
    path("loop", _answered_on_the_loop),
    path("api/wait-for-the-loop", _wait_for_the_loop),
    path("api/call-into-the-loop", _call_into_the_loop),
    path("api/aged", _look_then_age_the_connection),
    path("api/file", _a_file),
    path("api/files", _files_posted),
    path("api/quiet-stream", _quiet_stream),
    path("api/queries", _queries_marked),
    path("api/request-id", _request_id),
    path("stream-after-leak/<str:name>", _stream_after_leaving_a_transaction_open),
    path("leak/<str:name>", _leave_a_transaction_open),
    path("look/<str:name>", _what_the_connection_holds),
    path("stream/<str:name>", _stream_from_its_thread),
    path("api/stream/<str:name>", _stream_from_its_thread),  # the API's chain
    path("stream-leak/<str:name>", _stream_that_leaves_a_transaction_open),
    path("api/look/<str:name>", _what_the_connection_holds),  # the API's chain: no console middleware
]


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """Every call a request sends to its thread (each a hop from the event loop), in order."""
    seen: list[str] = []
    submit = RequestThread.submit

    def counted(self, fn, /, *args, **kwargs):
        seen.append(repr(fn))
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(RequestThread, "submit", counted)
    return seen


def close_hops() -> int:
    """The close's own hop: only where the lane's connection is closed at its request's end
    (CONN_MAX_AGE 0: `make test` runs this file so on PostgreSQL); otherwise its receivers wait for
    the lane's next call."""
    return 1 if connection.settings_dict.get("CONN_MAX_AGE") == 0 else 0


@pytest.fixture
def one_lane(settings):
    """These views as the URLconf, and one request thread at a time, so a request takes the last one's."""
    settings.ROOT_URLCONF = __name__
    settings.WEB_DB_CONNECTIONS = 1
    handler = StreamingASGIHandler()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=handler), base_url="http://127.0.0.1")


@pytest.mark.django_db(transaction=True)
async def test_a_request_reuses_the_last_ones_thread_and_connection(one_lane):
    async with one_lane as client:
        first = (await client.get("/look/nothing")).json()
        second = (await client.get("/look/nothing")).json()
    assert second["thread"] == first["thread"]
    assert first["connection_after"] is not None
    if connection.settings_dict.get("CONN_MAX_AGE") != 0:  # the default: kept between requests
        assert second["connection"] == first["connection_after"]  # open already, not opened again
    else:
        assert second["connection"] is None  # closed at the end of the last request, as configured
    assert second["in_atomic_block"] is False and second["autocommit"] is True


@pytest.mark.django_db(transaction=True)
async def test_no_transaction_carries_over_to_the_next_request(one_lane):
    name = f"leaked {uuid.uuid4().hex[:8]}"
    async with one_lane as client:
        leak = await client.get(f"/leak/{name}")
        assert leak.status_code == 200
        after = (await client.get(f"/look/{name}")).json()
        again = (await client.get(f"/look/{name}")).json()
    # The leaking request's lane is retired, its connection rolled back: the row never committed.
    assert after["thread"] != leak.json()["thread"]
    assert after["in_atomic_block"] is False and after["autocommit"] is True
    assert after["row_exists"] is False
    assert again["thread"] == after["thread"]  # a clean lane is reused as before
    assert not await Organization.objects.filter(name=name).aexists()


async def until(condition, what: str) -> None:
    """Wait for something the handler does after the client has its response (its last hop)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not seen: {what}")


def alive(ident: int) -> bool:
    return any(t.ident == ident for t in threading.enumerate())


@pytest.mark.django_db(transaction=True)
async def test_a_stream_thread_is_kept_for_the_next_stream(one_lane):
    """A stream's thread (after its lane is let go) is given back at its end, not ended and started anew."""
    async with one_lane as client:
        idle = handler_module.tails.idle()
        first = json.loads((await client.get("/stream/nothing")).text)
        await until(lambda: handler_module.tails.idle() > idle, "the stream's thread given back")
        second = json.loads((await client.get("/stream/nothing")).text)
    assert second["thread"] == first["thread"]
    assert alive(first["ident"])
    assert second["in_atomic_block"] is False
    assert second["connection_before"] is None  # a kept stream thread holds no connection


@pytest.mark.django_db(transaction=True)
async def test_a_stream_thread_left_in_a_transaction_is_not_kept(one_lane):
    name = f"leaked {uuid.uuid4().hex[:8]}"
    async with one_lane as client:
        leak = json.loads((await client.get(f"/stream-leak/{name}")).text)
        await until(lambda: not alive(leak["ident"]), "the leaking stream's thread ended")
        after = json.loads((await client.get(f"/stream/{name}")).text)
    assert after["thread"] != leak["thread"]
    assert after["in_atomic_block"] is False
    assert after["row_exists"] is False  # rolled back with the connection closed
    assert not await Organization.objects.filter(name=name).aexists()


@pytest.mark.django_db(transaction=True)
async def test_header_middleware_runs_on_the_loop_and_still_sets_its_headers(one_lane, hops):
    """Django's header-only middleware (console.handler.INLINE_MIDDLEWARE) cost no thread hop each."""
    async with one_lane as client:
        r = await client.get("/api/look/nothing")
    assert r.status_code == 200
    assert r.headers["X-Frame-Options"] == "DENY"  # clickjacking
    assert r.headers["X-Content-Type-Options"] == "nosniff"  # security
    assert r.headers["Referrer-Policy"] == "same-origin"  # security
    assert "default-src" in r.headers["Content-Security-Policy"]  # csp
    assert r.headers["Content-Length"] == str(len(r.content))  # common
    # the view (request_started's receivers at its start), and the response's close where its
    # connection closes at the request's end: not 6 more for the four middleware's hooks, nor one
    # for request_started
    assert len(hops) == 1 + close_hops(), hops


@pytest.mark.django_db(transaction=True)
async def test_a_stream_lets_its_lane_go_without_a_hop_when_its_view_left_it_clean(one_lane, hops):
    async with one_lane as client:
        r = await client.get("/api/stream/nothing")
    assert r.status_code == 200
    # the view (with request_started's receivers), the body's call and the close on the stream's
    # thread: no call of its own for request_started, nor to look at the lane before letting it go
    assert len(hops) == 3, hops


@pytest.mark.django_db(transaction=True)
async def test_a_stream_whose_view_left_a_transaction_open_retires_its_lane(one_lane):
    name = f"leaked {uuid.uuid4().hex[:8]}"
    async with one_lane as client:
        leak = json.loads((await client.get(f"/stream-after-leak/{name}")).text)
        after = (await client.get(f"/look/{name}")).json()
    assert after["thread"] != leak["thread"]  # the lane was retired, not given back
    assert after["in_atomic_block"] is False and after["autocommit"] is True
    assert after["row_exists"] is False
    assert not await Organization.objects.filter(name=name).aexists()


@pytest.mark.django_db(transaction=True)
async def test_djangos_request_started_receivers_run_before_the_view_on_its_thread(one_lane):
    """reset_queries (a request_started receiver) clears the lane's query log before each view."""
    async with one_lane as client:
        first = (await client.get("/api/queries")).json()
        second = (await client.get("/api/queries")).json()
    assert second["thread"] == first["thread"]  # the same lane and connection
    assert first["marked"] is False and second["marked"] is False


@pytest.mark.django_db(transaction=True)
async def test_request_started_still_runs_when_the_only_call_is_the_close(one_lane):
    """An async view with no call on the request's thread: the receivers run first in the close's
    call, before request_finished's."""
    from django.core.signals import request_finished

    seen: list[bool] = []

    def finished(**kwargs):
        seen.append(any(q.get("sql") == MARK for q in connection.queries_log))

    request_finished.connect(finished, dispatch_uid="test.finished", weak=False)
    try:
        async with one_lane as client:
            await client.get("/api/queries")  # marks the lane's log
            r = await client.get("/loop")
    finally:
        request_finished.disconnect(dispatch_uid="test.finished")
    assert r.status_code == 200
    assert seen == [True, False]  # the mark was cleared before the second request's close


@pytest.mark.django_db(transaction=True)
async def test_another_request_started_receiver_gets_djangos_signal(one_lane, hops):
    """With a receiver of its own connected, request_started is sent as Django sends it: in the
    request's context (what a receiver sets reaches the view), a call of its own."""
    from django.core.signals import request_started

    def started(sender, **kwargs):
        assert kwargs["scope"]["path"] == "/api/request-id"
        REQUEST_ID.set("set by a receiver")

    request_started.connect(started, dispatch_uid="test.started", weak=False)
    try:
        async with one_lane as client:
            r = await client.get("/api/request-id")
    finally:
        request_started.disconnect(dispatch_uid="test.started")
    assert r.json() == {"request_id": "set by a receiver"}
    # request_started, the view; not the close: the view opened no connection for it to close
    assert len(hops) == 2, hops


@pytest.mark.django_db(transaction=True)
async def test_a_settled_requests_close_costs_no_hop_and_its_lane_keeps_its_connection(one_lane, hops):
    """The close's request_finished receivers wait for the lane's next call (close_old_connections,
    repeated there by request_started's) where they would close nothing: no hop of their own."""
    if close_hops():
        pytest.skip("connections close at each request's end here (CONN_MAX_AGE 0): the close hops")
    async with one_lane as client:
        first = (await client.get("/api/look/nothing")).json()
        assert len(hops) == 1, hops  # the view alone
        second = (await client.get("/api/look/nothing")).json()
    assert second["thread"] == first["thread"] and second["connection"] == first["connection_after"]
    assert second["in_atomic_block"] is False and second["autocommit"] is True


@pytest.mark.django_db(transaction=True)
async def test_a_connection_past_its_age_is_closed_at_its_requests_end(one_lane, hops):
    """A lane left with a connection the receivers would close is closed as Django closes it: in a
    call of its own at the request's end, not left open on the idle lane."""
    async with one_lane as client:
        r = await client.get("/api/aged")
        assert r.status_code == 200
        assert len(hops) == 2 and "HttpResponseBase.close" in hops[-1], hops  # the view, the close
        after = (await client.get("/look/nothing")).json()
    assert after["thread"] == r.json()["thread"]
    assert after["connection"] is None  # closed by the close's call: the next request opened its own


@pytest.mark.django_db(transaction=True)
async def test_a_response_with_a_resource_of_its_own_is_closed_on_a_thread(one_lane, hops):
    async with one_lane as client:
        r = await client.get("/api/file")
    assert r.content == b"file body"
    assert "HttpResponseBase.close" in hops[-1], hops  # Django's close: its closer runs on a thread
    assert _Body.closed


@pytest.mark.django_db(transaction=True)
async def test_a_request_with_uploaded_files_is_closed_on_its_thread(one_lane, hops):
    async with one_lane as client:
        r = await client.post("/api/files", files={"upload": ("a.txt", b"x" * 10, "text/plain")})
    assert r.json() == {"files": ["upload"]}
    assert len(hops) == 2 and "HttpResponseBase.close" in hops[-1], hops  # it closes the uploaded files


@pytest.mark.django_db(transaction=True)
async def test_a_stream_with_no_thread_left_is_closed_on_the_loop(one_lane, hops):
    """An event stream that let its lane go and ran nothing on a thread: its close wakes no thread,
    and no stream thread is taken for it."""
    async with one_lane as client:
        idle = handler_module.tails.idle()
        r = await client.get("/api/quiet-stream")
    assert r.text == "data: quiet\n\n"
    assert len(hops) == 1, hops  # the view alone
    assert handler_module.tails.idle() == idle


@pytest.mark.django_db(transaction=True)
async def test_another_request_finished_receiver_gets_djangos_close(one_lane, hops):
    """With a receiver of its own connected, the close is Django's call, on the request's thread."""
    from django.core.signals import request_finished

    seen: list[str] = []
    request_finished.connect(lambda **kw: seen.append(_thread_token()), dispatch_uid="test.fin", weak=False)
    try:
        async with one_lane as client:
            r = (await client.get("/api/look/nothing")).json()
    finally:
        request_finished.disconnect(dispatch_uid="test.fin")
    assert len(hops) == 2, hops
    assert seen == [r["thread"]]


@pytest.fixture
def handed_over(monkeypatch) -> list[float]:
    """The waits of the event loop for its requests' calls (console.handler.hand_over), in seconds."""
    seen: list[float] = []
    hand_over = handler_module.hand_over

    def counted(call, seconds):
        seen.append(seconds)
        return hand_over(call, seconds)

    monkeypatch.setattr(handler_module, "hand_over", counted)
    return seen


@pytest.mark.django_db(transaction=True)
async def test_the_loop_waits_for_each_call_it_hands_a_request_thread(one_lane, hops, handed_over, settings):
    settings.REQUEST_CALL_WAIT_MS = 5
    async with one_lane as client:
        r = await client.get("/api/look/nothing")
    assert r.status_code == 200 and r.json()["row_exists"] is False
    assert handed_over == [0.005] * len(hops) and hops


@pytest.mark.django_db(transaction=True)
async def test_with_no_wait_set_the_loop_never_waits(one_lane, handed_over, settings):
    settings.REQUEST_CALL_WAIT_MS = 0
    async with one_lane as client:
        r = await client.get("/api/look/nothing")
    assert r.status_code == 200 and handed_over == []


@pytest.mark.django_db(transaction=True)
async def test_a_call_that_outlasts_the_wait_leaves_the_loop_free(one_lane, handed_over, settings):
    """The loop waits at most REQUEST_CALL_WAIT_MS, not for the call's end: a call that only the loop
    can end ends (waiting for its end, the loop would never set the event, and the call would give up)."""
    settings.REQUEST_CALL_WAIT_MS = 50  # the most it may be set to
    _CALL_STARTED.clear()
    _RELEASED_BY_THE_LOOP.clear()
    async with one_lane as client:
        request = asyncio.create_task(client.get("/api/wait-for-the-loop"))
        await until(_CALL_STARTED.is_set, "the call started")
        _RELEASED_BY_THE_LOOP.set()
        r = await asyncio.wait_for(request, 30)
    assert r.json() == {"released": True}
    assert handed_over and set(handed_over) == {0.05}


@pytest.mark.django_db(transaction=True)
async def test_a_call_that_runs_a_coroutine_on_the_loop_completes(one_lane, handed_over, settings):
    settings.REQUEST_CALL_WAIT_MS = 50
    async with one_lane as client:
        r = await asyncio.wait_for(client.get("/api/call-into-the-loop"), 30)
    assert r.json() == {"ran": "on the loop"}
    assert handed_over


def test_hand_over_returns_once_the_call_is_done():
    call: Future = Future()
    threading.Timer(0.05, call.set_result, ("done",)).start()
    handler_module.hand_over(call, 30)
    assert call.done() and call.result() == "done"


async def test_after_a_wait_runs_out_the_loop_waits_for_no_call_until_its_next_turn():
    """A burst of slow calls holds the loop up once, not once per call."""
    slow, quick = Future(), Future()
    threading.Timer(5, slow.set_result, ("done",)).start()  # waited for, it would be done on return
    handler_module.hand_over(slow, 0.001)
    assert not slow.done()  # the wait ran out; the call goes on without the loop
    threading.Timer(1, quick.set_result, ("done",)).start()  # waited for, it would be done on return
    handler_module.hand_over(quick, 30)
    assert not quick.done()  # not waited for: the loop's wait ran out this turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    handler_module.hand_over(quick, 30)  # the loop has had its turn: it waits again
    assert quick.done()


def test_the_copy_of_djangos_handle_is_of_the_django_it_was_made_from():
    """StreamingASGIHandler.handle is Django 6.1's ASGIHandler.handle with request_started moved:
    if Django's changes, review the copy (and then update this digest)."""
    import hashlib
    import inspect

    from django.core.handlers.asgi import ASGIHandler

    source = inspect.getsource(ASGIHandler.handle)
    assert hashlib.sha256(source.encode()).hexdigest() == DJANGO_HANDLE_SHA256


DJANGO_HANDLE_SHA256 = "c91f27c7fcdc3fff4f1c7082e91cb30f0bfaa5781ca632a116b1d9e607fd752a"


def test_only_plain_mixin_middleware_is_run_inline():
    """A middleware with its own async path (a later Django's) keeps it: it is not wrapped."""
    from django.middleware.security import SecurityMiddleware

    from console.handler import _import_middleware

    class OwnAsync(SecurityMiddleware):
        async def __acall__(self, request):
            return await self.get_response(request)

    class AsyncHook(SecurityMiddleware):
        async def aprocess_request(self, request):
            return None

    assert (
        _import_middleware("django.middleware.security.SecurityMiddleware").__mro__[1].__name__ == "_Inline"
    )
    assert not handler_module._plain_mixin(OwnAsync) and not handler_module._plain_mixin(AsyncHook)
    assert handler_module._plain_mixin(SecurityMiddleware)


# ---- in process: the cached caller of an API key ------------------------------------------------


@pytest.mark.django_db
def test_a_demoted_members_key_is_demoted_at_once(alice, bob):
    alice.member.role = "owner"
    alice.member.save()
    bob.member.role = "admin"
    bob.member.save()
    assert bob.post("/api/v1/agents", {"name": "before"}).status_code == 201  # cached as admin
    members.change_role(actor_for_membership(alice.member), bob.member.pk, "viewer")
    assert bob.post("/api/v1/agents", {"name": "after"}).status_code == 403


@pytest.mark.django_db
def test_a_deactivated_members_key_is_refused_at_once(alice, bob):
    alice.member.role = "owner"
    alice.member.save()
    assert bob.get("/api/v1/agents").status_code == 200  # cached
    members.set_active(actor_for_membership(alice.member), bob.member.pk, False)
    r = bob.get("/api/v1/agents")
    assert r.status_code == 401 and "deactivated" in r.json()["detail"]


@pytest.mark.django_db
def test_a_key_revoked_on_the_keys_page_is_refused_at_once(alice, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    assert alice.get("/api/v1/agents").status_code == 200  # cached
    key = ApiKey.objects.get(membership=alice.member)
    client = signed_in(alice)
    assert client.post(f"/keys/{key.pk}/revoke/").status_code in (200, 302)
    r = alice.get("/api/v1/agents")
    assert r.status_code == 401 and r.json()["detail"] == "This API key was revoked"


# ---- in process: the API without the console's middleware, the console with it -------------------


@pytest.mark.django_db
def test_the_api_neither_reads_nor_sets_a_session(alice, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = signed_in(alice)  # a session cookie, sent along with every request below
    r = client.get("/api/v1/agents")
    assert r.status_code == 401  # a session never authenticates the API
    r = client.get("/api/v1/agents", headers={"x-api-key": alice.key})
    assert r.status_code == 200
    assert "Set-Cookie" not in r.headers and "Cookie" not in r.get("Vary", "")
    assert client.get("/tasks/").status_code == 200  # the console page still knows the session


@pytest.mark.django_db
def test_every_console_form_keeps_its_csrf_check(alice, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = signed_in(alice)
    client.handler.enforce_csrf_checks = True
    for form in ("/keys/", "/tasks/new/", "/agents/new/", "/members/invite/", "/signout/", "/account/"):
        r = client.post(form, {"name": "no token"})
        assert r.status_code == 403, form
        assert b"CSRF" in r.content, form
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post("/", {"email": "alice@example.com", "password": PASSWORD}).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/api/keys/",
        "/api/tasks/new/",
        "/api/../keys/",
        "/api/%2e%2e/keys/",
        "/api/org_x/keys/",
        "/agent-controller/keys/",
        "/agent-controller/../keys/",
        "/agent-controller//tasks/new/",
        "/api//members/invite/",
    ],
)
@pytest.mark.django_db
def test_no_path_the_api_chain_serves_reaches_a_console_page(alice, path, settings):
    """Every path that skips the console's middleware resolves to the API (or its JSON 404)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = signed_in(alice)
    client.handler.enforce_csrf_checks = True
    r = client.post(path, {"name": "no token"})
    assert r["Content-Type"].startswith("application/json"), (path, r.status_code)
    assert r.status_code in (401, 404, 405), (path, r.status_code)
    assert not ApiKey.objects.filter(name="no token").exists()


def test_every_route_under_api_is_an_api_view():
    """What console.middleware.is_api_request relies on: /api/... never resolves to a console view."""
    from console.web import urls as console_urls

    for pattern in console_urls.urlpatterns:
        route = str(pattern.pattern).lstrip("^").rstrip("$")
        sample = re.sub(r"<[^>]+>", "1", route)
        match = resolve("/api/" + sample)
        assert not match.func.__module__.startswith("console.web"), (route, match.func)


# ---- live: the real server, over HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("request-path")
    live = LiveServer(workdir, server_env(workdir, WEB_DB_CONNECTIONS="3", API_KEY_CACHE_SECONDS="30"))
    live.start()
    yield live
    live.stop()


def _threads_and_connections(pid: int) -> tuple[int, int]:
    threads = len(os.listdir(f"/proc/{pid}/task"))
    wal = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            wal += os.readlink(f"/proc/{pid}/fd/{fd}").endswith("db.sqlite3-wal")
        except OSError:
            continue
    return threads, wal


@pytest.mark.live
def test_a_key_revoked_over_rest_is_refused_at_once(server):
    """Cached for 30 s on this server, yet refused on the very next request after the revocation."""
    owner = server.account("Revoke Org", f"{uuid.uuid4().hex[:8]}@owner.test")
    api = server.client(owner)
    made = api.post("/v1/keys", json={"name": "laptop"})
    assert made.status_code in (200, 201), made.text
    spare = made.json()
    laptop = httpx.Client(base_url=server.api, headers={"x-api-key": spare["key"]}, timeout=30)
    assert laptop.get("/v1/agents").status_code == 200  # cached now
    assert laptop.get("/v1/agents").status_code == 200
    assert api.delete(f"/v1/keys/{spare['id']}").status_code == 204
    r = laptop.get("/v1/agents")
    assert r.status_code == 401 and r.json()["detail"] == "This API key was revoked"
    r = laptop.get(f"/{owner.organization_id}/agent-execution/x/events")
    assert r.status_code == 401
    assert api.get("/v1/agents").status_code == 200  # the revoking key itself keeps working


@pytest.mark.live
def test_requests_keep_their_threads_and_connections(server):
    account = server.account("Lanes Org", "lanes@lanes.test")
    api = server.client(account)
    for _ in range(5):
        assert api.get("/v1/agents").status_code == 200
    before = _threads_and_connections(server.proc.pid)
    for _ in range(60):
        assert api.get("/metadata/default_llm_extra_headers").status_code == 200
    after = _threads_and_connections(server.proc.pid)
    # Sequential requests borrow the same lane: no new thread, no new connection per request.
    assert after[0] - before[0] <= 3, (before, after)
    assert after[1] - before[1] <= 3, (before, after)


@pytest.mark.live
def test_a_console_form_posted_without_its_token_is_refused_over_asgi(server):
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        r = browser.post("/", data={"email": "x@example.com", "password": "x"})
        assert r.status_code == 403 and "CSRF" in r.text
        r = browser.post("/agent-controller/keys/", data={"name": "x"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")


@pytest.mark.live
def test_api_responses_carry_no_session_or_csrf_cookie(server):
    account = server.account("Cookie Org", "cookie@cookie.test")
    r = httpx.get(f"{server.api}/v1/agents", headers={"x-api-key": account.api_key}, timeout=30)
    assert r.status_code == 200 and "set-cookie" not in r.headers
    docs = httpx.get(f"{server.api}/openapi.json", timeout=30)
    assert docs.status_code == 200 and json.loads(docs.text)["info"]["title"]


def test_a_console_without_csrf_middleware_fails_the_checks(settings):
    """security.W003 is silenced (CSRF is not in MIDDLEWARE itself); console.E001 stands in for it."""
    from django.core import checks

    assert "console.E001" not in [m.id for m in checks.run_checks(tags=["security"])]
    settings.CONSOLE_MIDDLEWARE = [m for m in settings.CONSOLE_MIDDLEWARE if "csrf" not in m]
    assert "console.E001" in [m.id for m in checks.run_checks(tags=["security"])]

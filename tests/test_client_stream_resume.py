"""A stream cut mid-task resumes with Last-Event-ID: every event exactly once, nothing skipped."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time

import pytest

from tasks_app.client import Configuration, Tasks
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


class CuttableProxy:
    """A TCP proxy on loopback between client and server whose open connections can be cut."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []  # the start of what the client sent on each connection
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        first = True
        try:
            while data := source.recv(65536):
                if record and first:
                    self.requests.append(data)
                    first = False
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection, as a flaky network or a restarted load balancer would."""
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()


def last_event_ids(requests: list[bytes]) -> list[str | None]:
    out = []
    for raw in requests:
        if b"/events" not in raw.split(b"\r\n", 1)[0]:
            continue
        found = re.search(rb"(?im)^last-event-id:\s*(\d+)", raw)
        out.append(found.group(1).decode() if found else None)
    return out


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def proxy(daphne_server):
    proxy = CuttableProxy(daphne_server.port)
    yield proxy
    proxy.close()


def test_a_cut_stream_resumes_without_duplicates_or_gaps(daphne_server, proxy):
    setup = make_setup(daphne_server)
    through_proxy = Configuration(
        base_url=f"http://127.0.0.1:{proxy.port}/api",
        api_key=setup.account.api_key,
        organization_id=setup.account.organization_id,
    )
    task = Tasks(through_proxy).create(setup.agent["id"], prompt="long job", events_streaming=True)
    received = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            received.extend(task.events())  # list.extend appends as the iterator yields
        except BaseException as exc:
            failure.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    chunks = lambda: [e.data for e in received if e.type == "chunk"]  # noqa: E731

    setup.push(task, *[("chunk", f"c{i}") for i in range(5)])
    wait_until(lambda: len(chunks()) == 5)
    seen_before_cut = received[-1].id
    proxy.cut()
    setup.push(task, *[("chunk", f"c{i}") for i in range(5, 10)])  # sent while the client is away
    wait_until(lambda: len(chunks()) == 10)
    proxy.cut()
    setup.push(task, ("chunk", "c10"))
    setup.finish(task, "finished")
    consumer.join(timeout=30)

    assert not consumer.is_alive() and not failure, failure
    assert chunks() == [f"c{i}" for i in range(11)]
    assert [e.id for e in received] == list(range(1, len(received) + 1))
    assert [e.type for e in received][-2:] == ["task_updated", "task_finished"]
    resumed_from = last_event_ids(proxy.requests)
    assert len(resumed_from) == 3, resumed_from
    assert resumed_from[0] is None
    assert resumed_from[1] == str(seen_before_cut)


async def test_aevents_resume_after_a_cut(daphne_server, proxy):
    import asyncio

    setup = make_setup(daphne_server)
    through_proxy = Configuration(
        base_url=f"http://127.0.0.1:{proxy.port}/api",
        api_key=setup.account.api_key,
        organization_id=setup.account.organization_id,
    )
    task = await Tasks(through_proxy).acreate(setup.agent["id"], prompt="async job", events_streaming=True)
    received = []

    async def consume() -> None:
        async for event in task.aevents():
            received.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.to_thread(setup.push, task, ("chunk", "a"), ("chunk", "b"))
    while len(received) < 3:
        await asyncio.sleep(0.02)
    proxy.cut()
    await asyncio.to_thread(setup.push, task, ("chunk", "c"))
    await asyncio.to_thread(setup.finish, task, "done")
    await asyncio.wait_for(consumer, timeout=30)

    assert [e.data for e in received if e.type == "chunk"] == ["a", "b", "c"]
    assert [e.id for e in received] == list(range(1, len(received) + 1))
    assert last_event_ids(proxy.requests) == [None, "3"]

"""Open event streams cost the server no OS thread and no database connection each."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from tests.live import LiveServer, server_env
from tests.sse_client import events_url, open_stream, pending_task

pytestmark = pytest.mark.live

STREAMS = 150
READ_THREADS = 2
REQUEST_THREADS = 4  # WEB_DB_CONNECTIONS: the long-lived request threads (console.handler), each a connection


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Its own server: nothing else runs in it while threads are counted, and no per-key limit bites."""
    workdir = tmp_path_factory.mktemp("sse-threads")
    env = server_env(
        workdir,
        SSE_KEEPALIVE_SECONDS="1",  # keep-alive re-checks run during the count
        SSE_MAX_STREAMS_PER_KEY=str(STREAMS * 2),
        SSE_READ_THREADS=str(READ_THREADS),
        WEB_DB_CONNECTIONS=str(REQUEST_THREADS),
    )
    live = LiveServer(workdir, env)
    live.start()
    yield live
    live.stop()


def threads_and_connections(pid: int) -> tuple[int, int]:
    """The process's OS threads, and its open SQLite connections.

    Connections are counted by their descriptor on the -wal file, one each: SQLite keeps the
    descriptors of closed connections on the main file open for reuse while others hold locks on it.
    """
    threads = len(os.listdir(f"/proc/{pid}/task"))
    connections = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed between listing and reading
            continue
        connections += target.endswith("db.sqlite3-wal")
    return threads, connections


async def test_it_holds_no_thread_or_connection_per_open_stream(server):
    account = server.account("Threads Org", "many@threads.test")
    task_id = pending_task(server, account)
    url = events_url(server, account, task_id)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        streams = [await open_stream(client, url, account.api_key) for _ in range(10)]
        await asyncio.sleep(2.5)  # the read pool and the keep-alive re-checks are warm
        base_threads, base_connections = threads_and_connections(server.proc.pid)
        while len(streams) < STREAMS:
            streams += await asyncio.gather(
                *[open_stream(client, url, account.api_key) for _ in range(min(20, STREAMS - len(streams)))]
            )
        assert all(s.response.status_code == 200 for s in streams)
        await asyncio.sleep(2.5)  # a couple of keep-alives, each re-checking every stream's key
        threads, connections = threads_and_connections(server.proc.pid)
        for s in streams:
            await s.close()
    added = STREAMS - 10
    # The read pool and the request threads may grow to their sizes (streams open 20 at once here);
    # anything per stream would add about `added` of each.
    assert threads - base_threads <= READ_THREADS + REQUEST_THREADS + 4, (base_threads, threads, added)
    assert connections - base_connections <= READ_THREADS + REQUEST_THREADS, (
        base_connections,
        connections,
        added,
    )

"""Live events reach an open stream through the channel-layer nudge, not the keep-alive's log read."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.live import LiveServer, server_env
from tests.sse_client import events_url, open_stream, pending_task

pytestmark = pytest.mark.live

KEEPALIVE = 30.0


@pytest.fixture(scope="module")
def slow_keepalive_server(tmp_path_factory):
    """A keep-alive far longer than the test waits: an event that arrives came by the nudge."""
    workdir = tmp_path_factory.mktemp("sse-nudge")
    live = LiveServer(workdir, server_env(workdir, SSE_KEEPALIVE_SECONDS=str(KEEPALIVE)))
    live.start()
    yield live
    live.stop()


async def test_it_delivers_a_pushed_event_through_the_nudge(slow_keepalive_server):
    server = slow_keepalive_server
    account = server.account("Nudge Org", "nudge@nudge.test")
    task_id = pending_task(server, account)
    async with httpx.AsyncClient(timeout=30) as client:
        stream = await open_stream(client, events_url(server, account, task_id), account.api_key)
        async with asyncio.timeout(5):
            while not (await stream.next_line()).startswith("data:"):  # the replayed task_created
                pass
        await asyncio.sleep(0.5)  # the stream now waits on the channel layer, its log read done
        pushed = time.monotonic()
        r = await client.post(
            f"{server.api}/agent-execution/{task_id}/events/push",
            json=[{"type": "chunk", "data": "by the nudge"}],
            headers={"x-api-key": account.api_key},
        )
        assert r.status_code == 200
        async with asyncio.timeout(KEEPALIVE / 6):
            while not (line := await stream.next_line()).startswith("data:"):
                pass
        assert time.monotonic() - pushed < KEEPALIVE / 6
        assert json.loads(line[len("data: ") :])["data"] == "by the nudge"
        await stream.close()

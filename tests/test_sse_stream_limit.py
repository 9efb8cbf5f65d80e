"""One API key holds at most SSE_MAX_STREAMS_PER_KEY open event streams; a closed one frees its slot."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from django.conf import settings

from tests.sse_client import OpenStream, events_url, open_stream, pending_task

pytestmark = pytest.mark.live


async def open_when_free(client: httpx.AsyncClient, url: str, key: str, timeout: float = 5.0) -> OpenStream:
    """The server frees a slot as it notices the end of a stream: retry briefly."""
    async with asyncio.timeout(timeout):
        while not isinstance(stream := await open_stream(client, url, key), OpenStream):
            assert stream.status_code == 429, stream.text
            await asyncio.sleep(0.05)
    return stream


async def test_it_refuses_streams_beyond_the_per_key_limit(daphne_server):
    limit = settings.SSE_MAX_STREAMS_PER_KEY  # the live server runs with the same default
    server = daphne_server
    alice = server.account("Limit Org", f"{uuid.uuid4().hex[:8]}@limit.test")
    bob = server.account("Limit Org", f"{uuid.uuid4().hex[:8]}@limit.test")
    finishing, pending = pending_task(server, alice), pending_task(server, alice)
    url = events_url(server, alice, pending)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        streams = [await open_stream(client, events_url(server, alice, finishing), alice.api_key)]
        streams += [await open_stream(client, url, alice.api_key) for _ in range(limit - 1)]
        assert all(isinstance(s, OpenStream) for s in streams)

        refused = await open_stream(client, url, alice.api_key)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/json")
        assert refused.json()["detail"] == (
            f"This API key already has {limit} open event streams, the most allowed: close one first"
        )
        other_key = await open_stream(client, url, bob.api_key)  # the limit is per key
        assert isinstance(other_key, OpenStream)

        # A stream the server ends (its task finished) frees its slot.
        done = server.client(alice).patch(
            f"/agent-execution/{finishing}/update", json={"status": "completed"}
        )
        assert done.status_code == 200
        streams.append(await open_when_free(client, url, alice.api_key))

        # So does a client that hangs up.
        await streams.pop(-1).close()
        streams.append(await open_when_free(client, url, alice.api_key))
        assert (await open_stream(client, url, alice.api_key)).status_code == 429

        for s in [*streams, other_key]:
            await s.close()

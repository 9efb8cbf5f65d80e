"""Open event streams from a test without a thread each: many at once from one event loop."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import httpx

from tests.live import Account, LiveServer


@dataclass
class OpenStream:
    """A stream whose response headers and first frame (`: connected`) have arrived."""

    response: httpx.Response
    lines: object  # the response's async line iterator, positioned after `: connected`
    _exit: contextlib.AsyncExitStack

    async def next_line(self) -> str:
        return await anext(self.lines)

    async def close(self) -> None:
        """Hang up, as a client that goes away does."""
        await self._exit.aclose()


async def open_stream(client: httpx.AsyncClient, url: str, api_key: str) -> OpenStream | httpx.Response:
    """The open stream, or the refusal (a read response) when the server did not answer 200."""
    stack = contextlib.AsyncExitStack()
    response = await stack.enter_async_context(client.stream("GET", url, headers={"x-api-key": api_key}))
    if response.status_code != 200:
        await response.aread()
        await stack.aclose()
        return response
    lines = response.aiter_lines()
    assert await anext(lines) == ": connected"
    return OpenStream(response, lines, stack)


def pending_task(server: LiveServer, account: Account) -> str:
    """A task of an external agent: it stays pending, so its stream never finishes by itself."""
    api = server.client(account)
    agent = api.post("/v1/agents", json={"name": f"Ext {uuid.uuid4().hex[:8]}", "framework": "external"})
    assert agent.status_code == 201, agent.text
    task = api.post(f"/agent-execution/{agent.json()['id']}", json={"input": {"text": "wait"}})
    assert task.status_code == 200, task.text
    return task.json()["id"]


def events_url(server: LiveServer, account: Account, task_id: str) -> str:
    return f"{server.api}/{account.organization_id}/agent-execution/{task_id}/events"

"""An open event stream ends within about a keep-alive once its key may no longer be used."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.sse_client import events_url, open_stream, pending_task

pytestmark = pytest.mark.live

KEEPALIVE = 1.0  # tests.live.server_env's SSE_KEEPALIVE_SECONDS


async def stream_then(server, change: str) -> tuple[float, list[str]]:
    """Open a stream on a never-finishing task, run `change` in the server's database, and time the end."""
    email = f"{uuid.uuid4().hex[:8]}@revoke.test"
    account = server.account("Revocation Org", email)
    url = events_url(server, account, pending_task(server, account))
    async with httpx.AsyncClient(timeout=30) as client:
        stream = await open_stream(client, url, account.api_key)
        await asyncio.to_thread(server.manage, "shell", "-c", change.format(email=email))
        changed = time.monotonic()
        rest: list[str] = []
        async with asyncio.timeout(KEEPALIVE * 3 + 2):
            async for line in stream.lines:
                rest.append(line)
        ended = time.monotonic() - changed
        await stream.close()
    return ended, rest


async def test_it_closes_a_stream_when_its_key_is_revoked(daphne_server):
    ended, rest = await stream_then(
        daphne_server,
        "from console.models import ApiKey\n"
        "for key in ApiKey.objects.filter(membership__user__email='{email}'): key.revoke()",
    )
    assert ended < KEEPALIVE * 2 + 1
    assert [line for line in rest if line][-1] == (
        ": access ended: the API key was revoked or its member deactivated"
    )


async def test_it_closes_a_stream_when_its_member_is_deactivated(daphne_server):
    ended, _ = await stream_then(
        daphne_server,
        "from django.contrib.auth import get_user_model\n"
        "get_user_model().objects.filter(email='{email}').update(is_active=False)",
    )
    assert ended < KEEPALIVE * 2 + 1


def test_a_revoked_key_cannot_open_a_new_stream(daphne_server):
    email = f"{uuid.uuid4().hex[:8]}@revoke.test"
    account = daphne_server.account("Revocation Org", email)
    url = events_url(daphne_server, account, pending_task(daphne_server, account))
    daphne_server.manage(
        "shell",
        "-c",
        f"from console.models import ApiKey\n"
        f"for key in ApiKey.objects.filter(membership__user__email='{email}'): key.revoke()",
    )
    r = httpx.get(url, headers={"x-api-key": account.api_key})
    assert r.status_code == 401
    assert r.json()["detail"] == "This API key was revoked"

"""Websockets of the console, driven with Channels' WebsocketCommunicator (no server, real layer and DB).

/ws/tasks/<id>/?since=: replay after `since`, live follow, closed after task_finished, once each;
/ws/tasks/: the live list. Refused before accept: no session, another Origin, another organization's
task, a deactivated member, a removed membership.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from console.models import Membership
from console.web.routing import websocket_application
from console.web.session import actor_for_membership
from tasks_app import actions
from tasks_app.schemas import TaskUpdateIn
from tests.test_console_history import agent, make

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1")


def session_cookie(persona) -> bytes:
    client = Client()
    client.force_login(persona.member.user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_socket(path: str, persona=None, origin=ORIGIN) -> tuple[WebsocketCommunicator, bool]:
    headers = [origin] if origin else []
    if persona is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(persona)))
    ws = WebsocketCommunicator(websocket_application, path, headers=headers)
    connected, _ = await ws.connect(timeout=5)
    return ws, connected


async def frames(ws: WebsocketCommunicator, n: int) -> list[dict]:
    return [json.loads(await ws.receive_from(timeout=5)) for _ in range(n)]


async def closed(ws: WebsocketCommunicator) -> bool:
    message = await ws.receive_output(timeout=5)
    return message["type"] == "websocket.close"


@pytest.fixture
def running(alice):
    return make(alice, agent(alice.org, "Writer"), "hello", status="executing")


def push(persona, task, *events) -> None:
    actions.push_events(actor_for_membership(persona.member), task.id, list(events))


def finish(persona, task, status: str = "completed") -> None:
    actions.update_task(
        actor_for_membership(persona.member),
        task.id,
        TaskUpdateIn(status=status),
        fields={"status"},
        full_dump=False,
    )


async def test_it_replays_after_since_then_follows_live_and_closes_after_task_finished(alice, running):
    await sync_to_async(push)(alice, running, ("chunk", "Hel"), ("chunk", "lo"))
    ws, connected = await open_socket(f"/ws/tasks/{running.id}/?since=2", alice)
    assert connected
    replay = await frames(ws, 2)
    assert [(f["seq"], f["type"], f["data"]) for f in replay] == [(3, "chunk", "Hel"), (4, "chunk", "lo")]
    assert set(replay[0]) == {"seq", "type", "time", "data"}
    await sync_to_async(push)(alice, running, ("chunk", " world"))
    assert (await frames(ws, 1))[0]["data"] == " world"
    await sync_to_async(finish)(alice, running)
    tail = await frames(ws, 2)
    assert [f["type"] for f in tail] == ["task_updated", "task_finished"]
    assert [f["seq"] for f in tail] == [6, 7]
    assert await closed(ws)


async def test_without_since_it_starts_from_the_first_event_and_closes_on_a_finished_task(alice, running):
    await sync_to_async(push)(alice, running, ("chunk", "x"))
    await sync_to_async(finish)(alice, running)
    ws, connected = await open_socket(f"/ws/tasks/{running.id}/", alice)
    assert connected
    got = await frames(ws, 5)
    assert [f["seq"] for f in got] == [1, 2, 3, 4, 5]
    assert got[0]["type"] == "task_created" and got[-1]["type"] == "task_finished"
    assert await closed(ws)


async def test_two_teammates_each_see_every_event_once_in_order(alice, bob, running):
    a, _ = await open_socket(f"/ws/tasks/{running.id}/?since=0", alice)
    b, _ = await open_socket(f"/ws/tasks/{running.id}/?since=1", bob)
    for i in range(5):
        await sync_to_async(push)(alice, running, ("chunk", str(i)))
    await sync_to_async(finish)(alice, running)
    seen_a, seen_b = await frames(a, 9), await frames(b, 8)
    assert [f["seq"] for f in seen_a] == list(range(1, 10))
    assert [f["seq"] for f in seen_b] == list(range(2, 10))
    assert await closed(a) and await closed(b)


async def test_a_viewer_may_follow(vera, running):
    ws, connected = await open_socket(f"/ws/tasks/{running.id}/", vera)
    assert connected
    await ws.disconnect()


async def test_another_organizations_task_is_refused_before_accept(charlie, running):
    _, connected = await open_socket(f"/ws/tasks/{running.id}/", charlie)
    assert not connected


async def test_no_session_is_refused(running):
    _, connected = await open_socket(f"/ws/tasks/{running.id}/")
    assert not connected


async def test_another_origin_or_none_is_refused(alice, running):
    _, evil = await open_socket(f"/ws/tasks/{running.id}/", alice, origin=(b"origin", b"http://evil.test"))
    _, missing = await open_socket(f"/ws/tasks/{running.id}/", alice, origin=None)
    assert not evil and not missing


async def test_a_deactivated_member_is_refused(bob, running):
    await sync_to_async(get_user_model().objects.filter(pk=bob.member.user_id).update)(is_active=False)
    _, connected = await open_socket(f"/ws/tasks/{running.id}/", bob)
    assert not connected


async def test_a_removed_membership_is_refused(bob, running):
    cookie = await sync_to_async(session_cookie)(bob)
    await sync_to_async(Membership.objects.filter(pk=bob.member.pk).delete)()
    ws = WebsocketCommunicator(
        websocket_application, f"/ws/tasks/{running.id}/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await ws.connect(timeout=5)
    assert not connected


async def test_a_bad_since_is_refused(alice, running):
    _, connected = await open_socket(f"/ws/tasks/{running.id}/?since=abc", alice)
    _, negative = await open_socket(f"/ws/tasks/{running.id}/?since=-1", alice)
    assert not connected and not negative


async def test_a_member_deactivated_while_watching_is_disconnected(bob, running, settings):
    settings.CONSOLE_WS_RECHECK_SECONDS = 0.1
    ws, connected = await open_socket(f"/ws/tasks/{running.id}/?since=2", bob)
    assert connected
    await sync_to_async(get_user_model().objects.filter(pk=bob.member.user_id).update)(is_active=False)
    message = await ws.receive_output(timeout=5)
    assert message == {"type": "websocket.close", "code": 4403}
    await sync_to_async(push)(bob, running, ("chunk", "secret"))  # nothing more reaches it
    assert await ws.receive_nothing(timeout=0.3)


async def test_the_live_list_carries_changes_of_the_organizations_tasks_only(alice, charlie, running):
    mine, connected = await open_socket("/ws/tasks/", alice)
    theirs, _ = await open_socket("/ws/tasks/", charlie)
    assert connected
    await sync_to_async(push)(alice, running, ("chunk", "no frame for chunks"))
    await sync_to_async(actions.update_task)(
        actor_for_membership(alice.member),
        running.id,
        TaskUpdateIn(internal_status="awaiting review"),
        fields={"internal_status"},
        full_dump=False,
    )
    change = (await frames(mine, 1))[0]
    assert set(change) == {"id", "status", "internal_status", "agent_id", "title", "updated_at"}
    assert (change["id"], change["status"], change["internal_status"]) == (
        running.id,
        "executing",
        "awaiting review",
    )
    created = await sync_to_async(make)(alice, running.agent, "a new one")
    new = (await frames(mine, 1))[0]
    assert (new["id"], new["status"], new["agent_id"]) == (created.id, "pending", running.agent_id)
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


async def test_the_live_list_needs_a_session(db):
    _, connected = await open_socket("/ws/tasks/")
    assert not connected

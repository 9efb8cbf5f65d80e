"""ASGI entry point. In the embedded default the worker pool runs inside this process."""

from __future__ import annotations

import asyncio
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django.setup(set_prefix=False)  # what get_asgi_application() does, with our handler instead

from django.conf import settings  # noqa: E402

from console import crypto  # noqa: E402 - needs Django set up
from console.handler import StreamingASGIHandler  # noqa: E402 - needs Django set up
from tasks_app import bus  # noqa: E402 - needs Django set up
from tasks_app.runtime import RUNTIME_IMPORTS  # noqa: E402
from tasks_app.runtime.worker import start_embedded, stop_embedded  # noqa: E402

try:
    crypto.check_stored_secrets()
except crypto.KeysDoNotMatchData as exc:  # refuse to serve rather than strand the stored secrets
    raise SystemExit(f"Refusing to start: {exc}") from None

django_app = StreamingASGIHandler()

# What `python -m console.serve` imports before it freezes its start-up objects (console/heap.py):
# the agent runtime's default-provider path (tasks_app/runtime), when runs execute in this process.
PRELOAD = RUNTIME_IMPORTS if settings.TASK_EXECUTION == "inprocess" else ()


async def http_application(scope, receive, send) -> None:
    """Django, plus starting the embedded worker on lifespan startup or the first connection."""
    bus.bind_loop(asyncio.get_running_loop())
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await start_embedded()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stop_embedded()
                await send({"type": "lifespan.shutdown.complete"})
                return
    await start_embedded()
    await django_app(scope, receive, send)


from channels.routing import ProtocolTypeRouter  # noqa: E402 - needs Django set up

from console.web.routing import websocket_application  # noqa: E402 - needs Django set up


async def _websocket(scope, receive, send) -> None:
    bus.bind_loop(asyncio.get_running_loop())
    await start_embedded()
    await websocket_application(scope, receive, send)


application = ProtocolTypeRouter(
    {"http": http_application, "lifespan": http_application, "websocket": _websocket}
)


def _start_with_daphne() -> None:
    """Daphne sends no lifespan events: start the pool as soon as its reactor runs."""
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        return
    import asyncio

    from twisted.internet import reactor

    reactor.callLater(0, lambda: asyncio.ensure_future(start_embedded()))


_start_with_daphne()

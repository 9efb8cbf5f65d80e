"""`python -m console.serve [daphne's arguments]`: daphne, on uvloop's event loop.

Why: the server is one asyncio loop carrying every request, stream, websocket and agent run, and
the loop's own machinery (callbacks, socket reads, timers) is a large share of its CPU. uvloop
runs the same asyncio API in C (libuv): measured with bench/compare.py's `ours` phase, the server
spends about 10% less CPU per agent run and answers a run at concurrency 1 about 15% sooner
(docs/benchmarks.md). Nothing else changes: daphne still serves HTTP, SSE and websockets through
Twisted's asyncio reactor, which here sits on a uvloop loop.

`SERVER_EVENT_LOOP=asyncio` is the way back to the standard library's loop (a platform without
uvloop, or to rule it out when chasing a bug). The policy must be set before daphne's server
module is imported: it creates its loop and installs the reactor at import time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from console import heap

LOOPS = ("uvloop", "asyncio")


def loop_choice(choice: str | None = None) -> str:
    """The event loop SERVER_EVENT_LOOP names; anything else stops the process with a message.

    Unset means uvloop where it is installed (it is a dependency except on Windows and PyPy, which
    it does not support), else asyncio's.
    """
    named = (choice or os.environ.get("SERVER_EVENT_LOOP") or "").strip().lower()
    if named and named not in LOOPS:
        raise SystemExit(f"SERVER_EVENT_LOOP must be one of {', '.join(LOOPS)}, not {named!r}")
    if named == "asyncio":
        return named
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if named:
            raise SystemExit("SERVER_EVENT_LOOP is uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def install_loop(choice: str | None = None) -> str:
    """Make new event loops uvloop's (or leave asyncio's); returns the loop in use."""
    choice = loop_choice(choice)
    if choice == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return choice


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind SERVER_EVENT_LOOP names, for the worker processes' run loops.

    The Celery worker's and `runworker`'s agent runs are the same asyncio work as the web server's
    embedded pool, so they get the same loop; the process's event loop policy is left alone.
    """
    if loop_choice() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main() -> None:
    """Install the loop, then hand the command line to daphne (same arguments as `python -m daphne`).

    Once daphne has imported the application, and before it listens, the process's collector is
    settled (console/heap.py), with the agent runtime loaded first when runs execute in this process.
    """
    install_loop()
    heap.gc_choice()  # a wrong SERVER_GC stops the server before it listens
    if "twisted.internet.reactor" in sys.modules:  # someone installed a reactor on the old loop
        raise SystemExit("console.serve must run before Twisted's reactor is installed")
    raw_request_bodies()
    no_second_access_log()
    command_line().entrypoint()


def no_second_access_log() -> None:
    """daphne's HTTP factory no longer formats Twisted's own access-log line for each request.

    Why: daphne writes the access log (`--access-log`, its AccessLogGenerator); Twisted's factory
    formats a line of its own per request too and hands it to Twisted's legacy log, which daphne's
    logging setup does not show: 0.7 % of the server's CPU per agent run for a line nobody reads.
    Only daphne's subclass changes; calling this twice changes nothing.
    """
    from daphne import http_protocol

    http_protocol.HTTPFactory.log = _no_log  # type: ignore[method-assign]


def _no_log(self: Any, request: Any) -> None:
    """`twisted.web.http.HTTPFactory.log`, for daphne's factory: nothing (daphne logs requests)."""


def raw_request_bodies() -> None:
    """daphne's requests leave a POST body as it came: Twisted no longer parses it into `args` first.

    Why: Twisted's `Request` parses a form or multipart POST body before daphne sees it, on the event
    loop, with the standard library's e-mail parser. daphne never reads what it makes (it hands the
    raw body to the application, where Django parses it, on the request's thread). The Content-Type
    alone was 1.4 % of the server's CPU per agent run (each run's create is a POST), and an upload's
    whole body was parsed one more time, on the loop every request and stream shares. A malformed
    multipart body now gets the application's answer (the API's JSON 400), not Twisted's empty one.
    Twisted's own switch (`parsePOSTFormSubmission`, a constructor argument) is set for every request
    daphne builds; calling this twice changes nothing.
    """
    from daphne import http_protocol

    if getattr(http_protocol.WebRequest, "raw_bodies", False):
        return

    class RawBodyRequest(http_protocol.WebRequest):
        raw_bodies = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["parsePOSTFormSubmission"] = False
            super().__init__(*args, **kwargs)

    http_protocol.WebRequest = RawBodyRequest


def command_line() -> type:
    """daphne's command line, settling the collector once the application is imported.

    Built on call: importing daphne's command line installs Twisted's reactor on the current loop.
    """
    from daphne.cli import CommandLineInterface

    class SettledCommandLine(CommandLineInterface):
        def load_asgi_app(self, asgi_app_path: str) -> object:
            return load_application(asgi_app_path)

    return SettledCommandLine


def load_application(path: str) -> object:
    """Import daphne's `module:attribute` application, then settle the collector (console/heap.py).

    Why here: it is the last moment before the process serves, with everything it loaded alive. The
    application's module names what to import first in its `PRELOAD` (console/asgi.py: the agent
    runtime, when runs execute in this process).
    """
    from daphne.utils import import_by_path

    application = import_by_path(path)
    module = sys.modules.get(path.partition(":")[0])
    heap.settle(preload=getattr(module, "PRELOAD", ()))
    return application


if __name__ == "__main__":
    main()

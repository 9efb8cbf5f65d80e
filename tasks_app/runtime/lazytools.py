"""An MCP server's tools offered to the model from a kept list, its session opened on the first call.

Most runs never call a tool of most servers, and a session (connect, initialize, list, close) was
the largest single cost of such a run after the model itself. `mcp.connect` builds this toolset
either from a list kept in `mcp.TOOL_LISTS` (no session yet) or around a session it just opened
(first contact: the credential is checked before the first model request, as always); in the
second case the definitions the run asks for are kept for the next runs of the same credential.

Kept apart from mcp.py because it subclasses pydantic-ai's toolset (imported only when a run
starts, like the rest of pydantic-ai).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from pydantic_ai.mcp import TOOL_SCHEMA_VALIDATOR
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool

from tasks_app.runtime import mcp

log = logging.getLogger(__name__)
Opener = Callable[[contextlib.AsyncExitStack], Awaitable[Any]]


class LazyMCPToolset(AbstractToolset[Any]):
    """One MCP server of a run: tools from a kept list, the session opened when one is called.

    The session is opened at most once per run (a lock covers parallel calls) and closed with the
    run's exit stack. It lives in a task of its own: the MCP client's anyio scopes must be left in
    the task that entered them, and the call that opens it runs in one of pydantic-ai's tool tasks.
    A failed open fails every call of the run with the same error (the task fails, saying why).
    """

    def __init__(
        self,
        toolset_id: str,
        opener: Opener | None,
        stack: contextlib.AsyncExitStack,
        *,
        tools: tuple[ToolDefinition, ...] | None = None,
        opened: Any = None,
        keep: tuple[mcp.ListingKey, float] | None = None,
    ) -> None:
        self._id = toolset_id
        self._opener = opener
        self._stack = stack
        self._defs = tools
        self._session: Any = opened
        self._keep = keep
        self._failed: BaseException | None = None
        self._lock = asyncio.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def opened(self) -> bool:
        """Whether this run has an MCP session to the server (tests and the benchmark look)."""
        return self._session is not None

    async def get_tools(self, ctx: Any) -> dict[str, ToolsetTool[Any]]:
        if self._defs is None:  # first contact: the session just opened lists them (no new request)
            listed = await self._session.get_tools(ctx)
            self._defs = tuple(tool.tool_def for tool in listed.values())
            if self._keep is not None:
                mcp.TOOL_LISTS.put(self._keep[0], self._defs, self._keep[1])
        return {
            d.name: ToolsetTool(
                toolset=self, tool_def=d, max_retries=ctx.max_retries, args_validator=TOOL_SCHEMA_VALIDATOR
            )
            for d in self._defs
        }

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: ToolsetTool[Any]) -> Any:
        session = await self._open()
        return await session.call_tool(name, tool_args, ctx, replace(tool, toolset=session))

    async def _open(self) -> Any:
        async with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._session is None:
                assert self._opener is not None
                try:
                    self._session = await held(self._opener, self._stack)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed = exc
                    raise
            return self._session


async def held(opener: Opener, stack: contextlib.AsyncExitStack) -> Any:
    """What `opener` opens, entered and left in a task of its own; it is left when `stack` closes.

    A caller cancelled while the session opens leaves it to be closed with `stack`; closing
    `stack` before the session is open cancels the opening.
    """
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold() -> None:
        async with contextlib.AsyncExitStack() as own:
            try:
                opened = await opener(own)
            except Exception as exc:
                if not ready.done():
                    ready.set_exception(exc)
                return
            if ready.done():  # the caller went away: close at once
                return
            ready.set_result(opened)
            await release.wait()

    holder = asyncio.create_task(hold(), name="mcp-session")

    async def close() -> None:
        release.set()
        if not ready.done():
            holder.cancel()
        await asyncio.wait([holder])
        if not ready.done():
            ready.cancel()
        if not holder.cancelled() and holder.exception() is not None:
            # The type only: a client error's text can carry the server's URL, query string and all.
            log.warning("closing an MCP session failed: %s", type(holder.exception()).__name__)

    stack.push_async_callback(close)
    return await asyncio.shield(ready)

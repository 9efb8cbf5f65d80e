"""Running one turn of a built-in agent's task on pydantic-ai, mapped onto our logs.

This module orchestrates a run; the concepts live beside it: prompt.py (what the model is told),
mcp.py (MCP servers as the task's user), subagents.py (agents as tools), mapping.py (library
events to our events, pure), failures.py (how a run fails), sink.py (batched writes). Tokens live
in memory only for the run and are masked out of everything written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from console import memo, outbound, vault
from console.masking import mask
from console.models import Agent, GraphItem
from console.prepared import KeyedList
from tasks_app import actions
from tasks_app.actions import signin as actions_signin
from tasks_app.models import Status, Task
from tasks_app.runtime import failures, limits, llm, mapping, mcp, prompt, subagents
from tasks_app.runtime.failures import TaskFailure

log = logging.getLogger(__name__)
SHUTDOWN = "worker-shutdown"  # cancel message: release the task instead of stopping it
_releasing: set[str] = set()  # tasks whose run's cancel hands them back (see release_on_cancel)


def release_on_cancel(task_id: str) -> None:
    """Mark the run of `task_id` so that its cancellation releases the task instead of stopping it.

    Why besides the SHUTDOWN message: the cancel reaches run_turn through pydantic-ai's run, and a
    step that absorbs a cancellation re-raises a fresh CancelledError without the message; a worker
    shutting down must still hand its task back, not record a user's stop.
    """
    _releasing.add(task_id)


@dataclass
class RunState:
    task: Task
    agent: Agent
    items: list[GraphItem]
    credentials: mcp.Credentials
    secrets: list[str]  # every string masked out of this run's writes, resolved once for the run
    calls: mapping.ToolCalls = field(default_factory=mapping.ToolCalls)


Loaded = tuple[Task, Agent, list[GraphItem], dict[str, Any], dict[str, str], list[dict[str, Any]]]


def _load(task_id: str, claimed: Task | None = None, *, refresh: bool = True) -> Loaded:
    """Everything a turn reads from the database, read once in a thread (no ORM on the event loop).

    `claimed`: the task as the claim just read it, with its agent (not read again). `refresh=False`:
    a vault connection due for a refresh raises vault.RefreshDue instead of being refreshed here.
    """
    from console import vault

    task = claimed if claimed is not None else Task.objects.select_related("agent").get(pk=task_id)
    agent = task.agent
    items = _GRAPH_ITEMS.all(agent.id)  # agent.graph_items.all(), compiled once per thread
    for item in items:
        item.agent = agent  # as the related manager gives them: no query for an item's agent
    tokens = actions.task_user_tokens(task)
    mcp_keys = [i.key for i in items if i.type == "mcp"]
    stored = vault.tokens_for(task.organization_id, vault.owner_of(task), mcp_keys, refresh=refresh)
    history = (  # a first turn has none: no query
        [
            {"kind": e.kind, "turn": e.turn, "data": e.data}
            for e in task.activity.filter(turn__lt=task.turns).order_by("position")
        ]
        if task.turns > 1
        else []
    )
    return task, agent, items, tokens, stored, history


_GRAPH_ITEMS = KeyedList(GraphItem, lambda agent_id: GraphItem.objects.filter(agent_id=agent_id))
aload = sync_to_async(_load)


def preload(claimed: Task) -> Loaded | None:
    """What the run of a task its create just claimed will read, read on the create's own thread.

    Why: the create is on a database thread already, and the run would otherwise start with a hop
    to one for the same reads (2 % of the server's CPU per run with the hop's wake-ups). None when a
    vault connection is due for a refresh (the create does not wait for an OAuth server: the run
    reads and refreshes itself) or the read failed (the run reads again and fails as it would).
    """
    try:
        return _load(claimed.id, claimed, refresh=False)
    except vault.RefreshDue:
        return None
    except Exception:
        log.exception("reading task %s for its run failed; the run reads it again", claimed.id)
        return None


def _secrets(agent: Agent, tokens: dict[str, Any], items: list[GraphItem]) -> list[str]:
    """The task's user tokens, the model key and the graph items' secrets: never written anywhere."""
    found = [v for v in tokens.values() if isinstance(v, str)]
    for value in tokens.values():
        if isinstance(value, dict):
            found += [v for v in value.values() if isinstance(v, str)]
    key = agent.get_model_api_key()
    if key:
        found.append(key)
    found += [v for v in llm.environment_keys() if v]
    for item in items:
        for value in item.secret_settings().values():
            found += [value] if isinstance(value, str) else [v for v in value.values() if isinstance(v, str)]
    return found


async def run_turn(
    task_id: str, worker_id: str, claimed: Task | None = None, loaded: Loaded | None = None
) -> None:
    """Execute the current turn of a claimed task and finish it (completed, failed, or stopped).

    `claimed`: what actions.claim_task returned (the task and its agent), so they are not read twice.
    `loaded`: what `preload` read for it on its create's thread, so nothing is read again.
    """
    try:
        await _run_turn(task_id, worker_id, claimed, loaded)
    finally:
        _releasing.discard(task_id)


async def _run_turn(task_id: str, worker_id: str, claimed: Task | None, loaded: Loaded | None) -> None:
    from tasks_app.runtime.sink import EventSink

    task, agent, items, tokens, stored, history = loaded or await aload(task_id, claimed)
    state = RunState(
        task,
        agent,
        items,
        mcp.Credentials(tokens, stored, task.organization_id, vault.owner_of(task)),
        _secrets(agent, tokens, items) + list(stored.values()),
    )
    sink = EventSink(task_id, state.secrets, worker_id)
    status, result = Status.COMPLETED, None
    usage: dict[str, int] = {}
    limit = limits.max_run_seconds(agent)
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            output, usage = await _run(state, sink, history)
        status, result = Status.COMPLETED, output
    except TimeoutError as exc:
        if not deadline.expired():  # a timeout of the model or a tool, not of the run
            status, result = failures.classify(exc, task, state.secrets)
        else:
            sink.write(mapping.aborted(state.calls))
            status, result = Status.STOPPED, limits.stopped_message(limit)
    except asyncio.CancelledError as cancelled:
        if SHUTDOWN in cancelled.args or task_id in _releasing:  # the worker is going away: hand it back
            await sink.close()
            await actions.arelease_task(task_id, worker_id)
            raise
        sink.write(mapping.aborted(state.calls))
        await sink.close()
        await actions.afinish_task(
            task_id, Status.STOPPED, "Stopped by request", worker_id=worker_id, used_tools=state.calls.used
        )
        raise
    except mcp.SignInNeeded as needed:  # paused until its user signs in (or stopped meanwhile)
        await sink.close()
        await actions_signin.apause_for_signin(
            task_id, worker_id, state.credentials.owner, needed.graph_item_key, needed.event
        )
        return
    except TaskFailure as exc:
        status, result = exc.status, exc.message
    except llm.ModelConfigError as exc:
        status, result = Status.FAILED, str(exc)
    except Exception as exc:
        status, result = failures.classify(exc, task, state.secrets)
        if status == Status.ERROR:
            log.exception("task %s crashed", task_id)
    if status != Status.COMPLETED:
        sink.activity(*mapping.error_message(result))
    events, activity = await sink.drain()  # written with the finish: one write at the end, not two
    result = mask(result, state.secrets)
    await actions.afinish_task(
        task_id,
        status,
        result,
        worker_id=worker_id,
        tokens=usage,
        used_tools=state.calls.used,
        final_message=result if status == Status.COMPLETED else None,
        events=events,
        activity=activity,
        secrets=state.secrets,
        no_sub_tasks=_made_no_sub_tasks(task, items),
    )


def _made_no_sub_tasks(task: Task, items: list[GraphItem]) -> bool:
    """Whether the task can have no sub-tasks: only a run makes them, through a sub-agent of its graph.

    The first attempt of a first turn whose graph (as this run read it) offered no sub-agent: no
    earlier run or attempt could have made one, nor this run. `task` is the run's copy as claimed.
    """
    return task.turns == 1 and task.attempts == 1 and not any(i.type == "agent" for i in items)


async def _run(state: RunState, sink: Any, history: list[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """The model run itself: check the endpoint, build the prompt and tools, stream, map, write."""
    from pydantic_ai.usage import UsageLimits

    task, agent = state.task, state.agent
    model = llm.build_model(task, agent)
    try:
        await outbound.check_url(llm.resolve(task, agent)[2])
    except outbound.OutboundRefused as exc:
        raise TaskFailure(f"The model endpoint was refused: {exc}") from None
    user_prompt = await prompt.user_prompt(task, agent)
    tools = await subagents.tools(task, state.items, state.credentials.task_tokens, sink, state.calls)
    limits = UsageLimits(tool_calls_limit=task.tool_call_limit, request_limit=None)

    async def handle(_ctx: Any, events: Any) -> None:
        # Called in the run's own task for each step's events (model stream, tool calls), so an
        # event costs no hand-over to another task as `run_stream_events` makes (~12% of the library's
        # CPU per run, measured in-process). Mapping and buffering are synchronous: nothing here waits.
        async for event in events:
            sink.write(mapping.map_event(event, state.calls))

    async with contextlib.AsyncExitStack() as stack:
        toolsets = await mcp.connect(state.items, state.credentials, state.calls, state.secrets, sink, stack)
        pai = _pydantic_agent(model, prompt.instructions(task, agent), tools)
        result = await pai.run(
            user_prompt,
            message_history=prompt.history_messages(history) or None,
            toolsets=toolsets,
            usage_limits=limits,
            event_stream_handler=handle,
        )
    return mapping.run_output(result)


_agents: dict[tuple[int, str], Any] = {}
AGENTS_KEPT = 64  # (model, instructions) pairs kept; beyond that the oldest is dropped


def _pydantic_agent(model: Any, instructions: str, tools: list[Any]) -> Any:
    """The pydantic-ai Agent of a run: one per model and instructions when the run brings no tools
    of its own (no sub-agents), shared by the runs that use them, as pydantic-ai intends (a run's
    state is its own: toolsets, history, limits and the event handler are the run's arguments).

    Why: building one per run (its capabilities, toolsets, validators) was 1.5 % of the server's CPU
    per agent run. A run whose tools close over its own task gets an Agent of its own, as before.
    """
    from pydantic_ai import Agent as PaiAgent

    if tools:
        return PaiAgent(model, instructions=instructions, tools=tools)
    key = (id(model), instructions)  # the Agent holds its model: the id names it while the entry lives
    found = _agents.get(key)
    if found is None:
        found = PaiAgent(model, instructions=instructions)
        memo.remember(_agents, key, found, AGENTS_KEPT)
    return found

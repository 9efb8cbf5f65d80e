"""The task API: the one package that changes tasks.

REST routes, console views, the websocket consumer and the runtime all call these functions;
nothing else writes Task, TaskEvent or ActivityEntry rows. Each write runs in one transaction,
and the events it appended are published on the channel layer only after that commit (log.py).

Every public write has a sync form and, beside it, an async twin (prefixed `a`), which publish
differently: the async one awaits the channel layer on the caller's loop, the sync one hops
through async_to_sync.

Modules, by section: reads, create (and follow-up turns), runs (claim, leases, progress, finish),
changes (stop, update, internal status), reports (pushed events, external reports, metrics), and
the shared log writer (log) and row helpers (rows). Callers import from this package.
"""

from console.access import SYSTEM, Actor
from tasks_app.actions.changes import aforce_stop, astop_task, force_stop, stop_task, update_task
from tasks_app.actions.create import acreate_task, create_task
from tasks_app.actions.log import (
    SNAPSHOT_EVENTS,
    _action,
    _append_activity,
    _append_events,
    _async_twin,
    task_user_tokens,
)
from tasks_app.actions.reads import (
    LIST_COLUMNS,
    LIST_FILTERS,
    activity_entries,
    events_after,
    get_agent,
    get_task,
    list_tasks,
    task_scope,
    task_scope_and_progress,
)
from tasks_app.actions.reports import (
    PUSHABLE_EVENTS,
    SERVER_ID,
    push_events,
    record_metrics,
    report_external_task,
)
from tasks_app.actions.rows import _finish, _locked_task, _save, _snapshot, _task_for_update, answer_json
from tasks_app.actions.runs import (
    aclaim_task,
    afinish_task,
    arecord_progress,
    arelease_task,
    arequeue_expired,
    claim_task,
    finish_task,
    record_progress,
    release_task,
    renew_lease,
    renew_leases,
    requeue_expired,
)

__all__ = [
    "LIST_COLUMNS",
    "LIST_FILTERS",
    "PUSHABLE_EVENTS",
    "SERVER_ID",
    "SNAPSHOT_EVENTS",
    "SYSTEM",
    "Actor",
    "_action",
    "_append_activity",
    "_append_events",
    "_async_twin",
    "_finish",
    "_locked_task",
    "_save",
    "_snapshot",
    "_task_for_update",
    "aclaim_task",
    "acreate_task",
    "activity_entries",
    "afinish_task",
    "aforce_stop",
    "answer_json",
    "arecord_progress",
    "arelease_task",
    "arequeue_expired",
    "astop_task",
    "claim_task",
    "create_task",
    "events_after",
    "finish_task",
    "force_stop",
    "get_agent",
    "get_task",
    "list_tasks",
    "push_events",
    "record_metrics",
    "record_progress",
    "release_task",
    "renew_lease",
    "renew_leases",
    "report_external_task",
    "requeue_expired",
    "stop_task",
    "task_scope",
    "task_scope_and_progress",
    "task_user_tokens",
    "update_task",
]

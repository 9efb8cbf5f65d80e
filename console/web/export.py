"""/tasks/export.csv and /tasks/export.jsonl: the filtered history, streamed in keyset pages.

Under ASGI Django buffers a streaming response's *sync* iterator whole before sending it, so the
rows come from an async generator that reads one page at a time: memory stays flat on any size.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.web.guard import member_page
from console.web.history import HistoryFilterForm, HistoryQuery
from tasks_app import wire

PAGE = 1000
COLUMNS = [
    "id", "created_at", "updated_at", "finished_at", "agent_id", "agent", "status", "internal_status",
    "title", "user_id", "user_email", "created_by", "source", "turns", "duration", "prompt_tokens",
    "completion_tokens", "total_tokens", "tools_used", "tool_calls", "prompt", "result",
]  # fmt: skip
VALUES = [
    "id", "created_at", "updated_at", "finished_at", "agent_id", "agent__name", "status", "internal_status",
    "title", "user_id", "input_user", "created_by_user__email", "source", "turns", "duration", "tokens",
    "used_tools", "input_text", "result",
]  # fmt: skip


def _row(v: dict[str, Any]) -> dict[str, Any]:
    tokens = wire.tokens_json(v["tokens"])
    tools = list(v["used_tools"] or [])
    return {
        "id": v["id"],
        "created_at": wire.iso(v["created_at"]),
        "updated_at": wire.iso(v["updated_at"]),
        "finished_at": wire.iso(v["finished_at"]),
        "agent_id": v["agent_id"],
        "agent": v["agent__name"],
        "status": v["status"],
        "internal_status": v["internal_status"],
        "title": v["title"] or None,
        "user_id": v["user_id"] or None,
        "user_email": (v["input_user"] or {}).get("email"),
        "created_by": v["created_by_user__email"],
        "source": v["source"] or None,
        "turns": v["turns"],
        "duration": v["duration"],
        "prompt_tokens": tokens["prompt_tokens"],
        "completion_tokens": tokens["completion_tokens"],
        "total_tokens": tokens["total_tokens"],
        "tools_used": sorted(set(tools)),
        "tool_calls": len(tools),
        "prompt": v["input_text"],
        "result": v["result"],
    }


def _page(query: HistoryQuery, cursor: tuple[Any, str] | None) -> list[dict[str, Any]]:
    name, descending = query.sort_field
    qs = query.base()
    if cursor is not None:
        op = "lt" if descending else "gt"
        qs = qs.filter(Q(**{f"{name}__{op}": cursor[0]}) | Q(**{name: cursor[0], f"id__{op}": cursor[1]}))
    return list(query.ordered(qs).values(*VALUES)[:PAGE])


async def _pages(query: HistoryQuery) -> AsyncIterator[list[dict[str, Any]]]:
    name, _ = query.sort_field
    cursor = None
    while True:
        rows = await sync_to_async(_page)(query, cursor)
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        cursor = (rows[-1][name], rows[-1]["id"])


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        value = ";".join(value)
    # A cell starting like a formula is text, not a formula, in a spreadsheet (CSV injection).
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        return "'" + value
    return value


async def _csv(query: HistoryQuery) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    async for rows in _pages(query):
        for v in rows:
            row = _row(v)
            writer.writerow([_cell(row[c]) for c in COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


async def _jsonl(query: HistoryQuery) -> AsyncIterator[str]:
    async for rows in _pages(query):
        yield "".join(json.dumps(_row(v), ensure_ascii=False, default=str) + "\n" for v in rows)


@member_page
@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    form = HistoryFilterForm(request.actor, request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return HttpResponse(
            f"Invalid filter: {errors}\n", status=400, content_type="text/plain; charset=utf-8"
        )
    query = HistoryQuery.from_form(request.actor, form)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        response = StreamingHttpResponse(_csv(query), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(_jsonl(query), content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="tasks-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response

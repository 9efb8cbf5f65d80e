"""/audit/: the audit log for admins, filtered by actor, action, object and date; CSV/JSONL export."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from console import audit
from console.ids import row_id
from console.models import AuditEvent, Role
from console.web.guard import member_page

PAGE = 50
EXPORT_PAGE = 1000
COLUMNS = [
    "id", "created_at", "actor", "address", "action", "object_type", "object_id", "object_label", "changes",
]  # fmt: skip


class AuditFilterForm(forms.Form):
    actor = forms.CharField(label="Actor", required=False, max_length=254)
    action = forms.ChoiceField(label="Action", required=False)
    object = forms.CharField(label="Object (id or name)", required=False, max_length=200)
    since = forms.DateField(label="From", required=False, widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(label="To", required=False, widget=forms.DateInput({"type": "date"}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        groups = sorted({a.split(".")[0] for a, _ in audit.ACTIONS})
        self.fields["action"].choices = [
            ("", "Any action"),
            *[(g, f"Any {g} change") for g in groups],
            *audit.ACTIONS,
        ]

    def rows(self, organization_id: str) -> QuerySet[AuditEvent]:
        data = self.cleaned_data
        return audit.entries(
            organization_id,
            actor=data["actor"],
            action=data["action"],
            object_id=data["object"],
            since=data["since"],
            until=data["until"],
        )


def _filters_qs(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("before", None)
    return params.urlencode()


@member_page(role=Role.ADMIN)
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    context: dict[str, Any] = {"nav": "audit", "form": form, "filters_qs": _filters_qs(request)}
    if not form.is_valid():
        context["rows"] = []
        return render(request, "admin_pages/audit.html", context, status=400)
    rows = form.rows(request.actor.organization_id).order_by("-id")
    before = request.GET.get("before", "")
    with contextlib.suppress(ValueError):  # a malformed cursor is the first page
        rows = rows.filter(id__lt=row_id(before))
    page = list(rows[: PAGE + 1])
    context.update(
        rows=[{"entry": e, "label": audit.ACTION_LABELS.get(e.action, e.action)} for e in page[:PAGE]],
        next_before=page[PAGE - 1].pk if len(page) > PAGE else None,
        first_page=not before,
    )
    return render(request, "admin_pages/audit.html", context)


async def _pages(form: AuditFilterForm, organization_id: str) -> AsyncIterator[list[dict[str, Any]]]:
    before = None
    while True:

        def page(before: int | None = before) -> list[dict[str, Any]]:
            rows = form.rows(organization_id).order_by("-id")
            if before is not None:
                rows = rows.filter(id__lt=before)
            return [audit.entry_json(e) for e in rows[:EXPORT_PAGE]]

        rows = await sync_to_async(page)()
        if rows:
            yield rows
        if len(rows) < EXPORT_PAGE:
            return
        before = rows[-1]["id"]


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    # A cell starting like a formula is text in a spreadsheet (CSV injection).
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        return "'" + value
    return value


async def _csv(form: AuditFilterForm, organization_id: str) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    async for rows in _pages(form, organization_id):
        buffer.seek(0)
        buffer.truncate()
        for row in rows:
            writer.writerow([_cell(row[c]) for c in COLUMNS])
        yield buffer.getvalue()


async def _jsonl(form: AuditFilterForm, organization_id: str) -> AsyncIterator[str]:
    async for rows in _pages(form, organization_id):
        yield "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@member_page(role=Role.ADMIN)
@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return HttpResponse(
            f"Invalid filter: {errors}\n", status=400, content_type="text/plain; charset=utf-8"
        )
    org = request.actor.organization_id
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        response = StreamingHttpResponse(_csv(form, org), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(
            _jsonl(form, org), content_type="application/x-ndjson; charset=utf-8"
        )
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response

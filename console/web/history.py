"""The team's task history: filters read from the query string, sorting, keyset pages, counts.

The same `HistoryQuery` drives the history page, its live refresh and the exports, so a shared link
and an export show exactly the same set.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from console.errors import BadRequest
from console.models import Agent, Membership
from console.web import search
from tasks_app.actions import Actor
from tasks_app.models import INTERNAL_STATUS_MAX, TERMINAL_STATUSES, Status, Task

# sort name -> (label, field, descending)
SORTS = {
    "newest": ("Newest first", "created_at", True),
    "oldest": ("Oldest first", "created_at", False),
    "updated": ("Recently updated", "updated_at", True),
}
FILTER_NAMES = ("agent", "status", "internal_status", "user", "created_by", "from", "to", "q")
RUNNING = [s for s in Status.values if s not in TERMINAL_STATUSES]


class HistoryFilterForm(forms.Form):
    """The query string of /tasks/ and its exports; every field optional, errors shown by the field."""

    agent = forms.ChoiceField(label="Agent", required=False)
    status = forms.MultipleChoiceField(
        label="Status", required=False, choices=[(s, s) for s in Status.values], widget=forms.SelectMultiple
    )
    internal_status = forms.CharField(label="Internal status", required=False, max_length=INTERNAL_STATUS_MAX)
    user = forms.CharField(label="User (id or email)", required=False, max_length=320)
    created_by = forms.ChoiceField(label="Created by", required=False)
    q = forms.CharField(label="Text", required=False, max_length=500)
    sort = forms.ChoiceField(
        label="Sort", required=False, choices=[(k, v[0]) for k, v in SORTS.items()], initial="newest"
    )

    def __init__(self, actor: Actor, data: QueryDict, *args: Any, **kwargs: Any) -> None:
        # status may also come comma-separated (status=failed,error), as the REST API takes it
        data = data.copy()
        statuses = [s.strip() for value in data.getlist("status") for s in value.split(",") if s.strip()]
        data.setlist("status", statuses)
        super().__init__(data, *args, **kwargs)
        self.fields["from"] = forms.DateField(
            label="From", required=False, widget=forms.DateInput({"type": "date"})
        )
        self.fields["to"] = forms.DateField(
            label="To", required=False, widget=forms.DateInput({"type": "date"})
        )
        agents = Agent.objects.filter(organization_id=actor.organization_id).order_by("name")
        self.fields["agent"].choices = [("", "Any agent")] + [(a.id, a.name) for a in agents]
        members = (
            Membership.objects.filter(organization_id=actor.organization_id)
            .select_related("user")
            .order_by("user__email")
        )
        self.fields["created_by"].choices = [("", "Anyone")] + [(m.user.email, m.user.email) for m in members]
        self.fields["q"].widget = forms.TextInput(
            {"type": "search", "placeholder": "words in prompt, title or result"}
        )
        self.order_fields(
            ["q", "agent", "status", "internal_status", "user", "created_by", "from", "to", "sort"]
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("from") and data.get("to") and data["from"] > data["to"]:
            self.add_error("to", "must be on or after From")
        return data


@dataclass
class HistoryQuery:
    """Validated filters; `filters()` builds the organization's queryset."""

    actor: Actor
    agent: str = ""
    statuses: list[str] = field(default_factory=list)
    internal_status: str = ""
    user: str = ""
    created_by: str = ""
    date_from: Any = None
    date_to: Any = None
    q: str = ""
    sort: str = "newest"

    @classmethod
    def from_form(cls, actor: Actor, form: HistoryFilterForm) -> HistoryQuery:
        d = form.cleaned_data if form.is_valid() else {}
        return cls(
            actor=actor,
            agent=d.get("agent") or "",
            statuses=list(d.get("status") or []),
            internal_status=d.get("internal_status") or "",
            user=(d.get("user") or "").strip(),
            created_by=d.get("created_by") or "",
            date_from=d.get("from"),
            date_to=d.get("to"),
            q=d.get("q") or "",
            sort=d.get("sort") or "newest",
        )

    def base(self, *, with_status: bool = True) -> QuerySet[Task]:
        qs = Task.objects.filter(organization_id=self.actor.organization_id)
        if self.agent:
            qs = qs.filter(agent_id=self.agent)
        if with_status and self.statuses:
            qs = qs.filter(status__in=self.statuses)
        if self.internal_status:
            qs = qs.filter(internal_status=self.internal_status)
        if self.user:
            qs = qs.filter(Q(user_id=self.user) | Q(input_user__email__iexact=self.user))
        if self.created_by:
            creator = get_user_model().objects.filter(email__iexact=self.created_by).values("pk")[:1]
            qs = qs.filter(created_by_user_id__in=creator)
        if self.date_from:
            qs = qs.filter(created_at__gte=_start_of(self.date_from))
        if self.date_to:
            qs = qs.filter(created_at__lt=_start_of(self.date_to + timedelta(days=1)))
        if self.q.strip():
            qs = qs.filter(search.matches(self.q))
        return qs

    @property
    def sort_field(self) -> tuple[str, bool]:
        _, name, descending = SORTS.get(self.sort, SORTS["newest"])
        return name, descending

    def ordered(self, qs: QuerySet[Task], *, reverse: bool = False) -> QuerySet[Task]:
        name, descending = self.sort_field
        if descending != reverse:
            return qs.order_by(f"-{name}", "-id")
        return qs.order_by(name, "id")

    def page(self, size: int, after: str = "", before: str = "") -> Page:
        """One keyset page: rows after (or before) a cursor, never an OFFSET."""
        name, descending = self.sort_field
        qs = self.base().select_related("agent", "created_by_user")
        backwards = bool(before) and not after
        cursor = decode_cursor(before if backwards else after)
        if cursor is not None:
            value, pk = cursor
            forward_is_less = descending != backwards
            op = "lt" if forward_is_less else "gt"
            qs = qs.filter(Q(**{f"{name}__{op}": value}) | Q(**{name: value, f"id__{op}": pk}))
        rows = list(self.ordered(qs, reverse=backwards)[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if backwards:
            rows.reverse()
        has_next = more if not backwards else True
        has_prev = (cursor is not None) if not backwards else more
        return Page(
            rows=rows,
            next_cursor=encode_cursor(rows[-1], name) if rows and has_next else "",
            prev_cursor=encode_cursor(rows[0], name) if rows and has_prev else "",
        )

    def counts(self) -> dict[str, int]:
        """Tasks per status under every filter but the status one (the tabs above the table)."""
        found = dict(self.base(with_status=False).order_by().values_list("status").annotate(n=Count("id")))
        return {s: found.get(s, 0) for s in Status.values}

    def query_string(self, **override: Any) -> str:
        """These filters (and sort) as a query string, with `override` applied (None drops a key)."""
        params = QueryDict(mutable=True)
        values = {
            "agent": self.agent,
            "status": self.statuses,
            "internal_status": self.internal_status,
            "user": self.user,
            "created_by": self.created_by,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "q": self.q,
            "sort": "" if self.sort == "newest" else self.sort,
        }
        values.update(override)
        for key, value in values.items():
            if isinstance(value, list):
                if value:
                    params.setlist(key, value)
            elif value:
                params[key] = value
        return params.urlencode()


@dataclass
class Page:
    rows: list[Task]
    next_cursor: str
    prev_cursor: str


def _start_of(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def encode_cursor(task: Task, name: str) -> str:
    raw = json.dumps([getattr(task, name).isoformat(), task.id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, str] | None:
    """The (sort value, id) a page starts after; BadRequest for a cursor this server did not make."""
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        stamp, pk = json.loads(raw)
        return datetime.fromisoformat(stamp), str(pk)
    except (ValueError, TypeError):
        raise BadRequest("This page link is damaged; start again from the first page.") from None

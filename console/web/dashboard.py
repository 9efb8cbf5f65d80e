"""/dashboard/: what the team's agents are doing, from aggregate queries, drawn as server-side SVG.

Every number comes from GROUP BY queries over the chosen range (no per-task Python loop): one over
tasks grouped by (time bucket, agent, status) for the status, failure and token charts; one window
query for each agent's exact p50/p95 duration; one over tool-call activity entries. The charts are
plain SVG geometry computed here and drawn by the template, each with its numbers as a table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import CharField, Count, F, IntegerField, Q, QuerySet, Sum, Window
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, RowNumber, Substr, Trunc
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.models import Agent
from console.web.guard import member_page
from tasks_app.models import ActivityEntry, ActivityKind, Status, Task

RANGES = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
DEFAULT_RANGE = "7d"
MAX_BUCKETS = 24 * 8  # an hourly chart of more than a week is unreadable
FAILED = (Status.FAILED, Status.ERROR)
RUNNING = (Status.PENDING, Status.EXECUTING, Status.PAUSED)
STATUS_ORDER = [
    Status.COMPLETED,
    Status.FAILED,
    Status.ERROR,
    Status.STOPPED,
    Status.EXECUTING,
    Status.PAUSED,
    Status.PENDING,
]
SERIES = 8  # colours for agents, cycled (console.css .series-N)


class DashboardForm(forms.Form):
    range = forms.ChoiceField(
        label="Range",
        required=False,
        choices=[
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("90d", "Last 90 days"),
        ],
    )
    bucket = forms.ChoiceField(
        label="Per", required=False, choices=[("", "Automatic"), ("hour", "Hour"), ("day", "Day")]
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        span = RANGES[data.get("range") or DEFAULT_RANGE]
        bucket = data.get("bucket") or ("hour" if span <= timedelta(days=2) else "day")
        if bucket == "hour" and span / timedelta(hours=1) > MAX_BUCKETS:
            self.add_error("bucket", "Hourly buckets go up to 8 days; choose a shorter range or per day.")
        data["range"] = data.get("range") or DEFAULT_RANGE
        data["bucket"] = bucket
        return data


# ---- geometry -------------------------------------------------------------------------------------


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass
class Chart:
    """An SVG chart: bars, labels and a few gridlines, in a viewBox of width x height."""

    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    grid: list[dict[str, Any]] = field(default_factory=list)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def columns(
    buckets: list[str], series: list[tuple[str, str, list[float]]], *, unit: str = "", height: int = 180
) -> Chart:
    """Stacked columns: one per bucket, one segment per series (name, css class, values)."""
    left, bottom, top = 44, 22, 8
    width = max(360, min(960, left + 14 * len(buckets)))
    plot_w, plot_h = width - left - 4, height - bottom - top
    totals = [sum(s[2][i] for s in series) for i in range(len(buckets))]
    peak = _nice_max(max(*totals, 4) if totals else 4)  # a few tasks: whole-number gridlines
    chart = Chart(width, height)
    for k in range(5):
        value = peak * k / 4
        y = top + plot_h - plot_h * k / 4
        chart.grid.append(
            {"x1": left, "x2": width - 4, "y": round(y, 1), "label": _num(value), "ly": round(y + 4, 1)}
        )
    step = plot_w / max(len(buckets), 1)
    every = max(1, math.ceil(len(buckets) / 8))
    for i, bucket in enumerate(buckets):
        x = left + i * step + step * 0.1
        y = top + plot_h
        for name, cls, values in series:
            if not values[i]:
                continue
            h = plot_h * values[i] / peak
            y -= h
            chart.bars.append(
                Bar(
                    round(x, 1),
                    round(y, 1),
                    round(step * 0.8, 1),
                    round(h, 1),
                    cls,
                    f"{bucket} · {name}: {_num(values[i])}{unit}",
                )
            )
        if i % every == 0:
            chart.labels.append({"x": round(x + step * 0.4, 1), "y": height - 6, "text": bucket})
    return chart


def hbars(rows: list[tuple[str, list[tuple[float, str, str]]]], *, maximum: float | None = None) -> Chart:
    """Horizontal bars: one row per label, one or more bars (value, css class, title) per row."""
    left, row_h = 120, 26
    width = 460
    height = max(row_h * len(rows) + 8, 34)
    peak = maximum or _nice_max(max((v for _, bars in rows for v, _, _ in bars), default=0))
    chart = Chart(width, height)
    for i, (label, bars) in enumerate(rows):
        y = 4 + i * row_h
        chart.labels.append({"x": left - 6, "y": y + row_h / 2 + 2, "text": label[:22], "anchor": "end"})
        thickness = (row_h - 8) / max(len(bars), 1)
        for j, (value, cls, title) in enumerate(bars):
            w = (width - left - 60) * (value / peak if peak else 0)
            chart.bars.append(
                Bar(
                    left,
                    round(y + 2 + j * thickness, 1),
                    round(max(w, 0.5), 1),
                    round(thickness - 1, 1),
                    cls,
                    title,
                )
            )
        chart.labels.append(
            {
                "x": left + (width - left - 60) * (max(v for v, _, _ in bars) / peak if peak else 0) + 6,
                "y": y + row_h / 2 + 2,
                "text": bars[0][2].split(": ")[-1] if len(bars) == 1 else "",
                "anchor": "start",
            }
        )
    return chart


def _num(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


# ---- queries --------------------------------------------------------------------------------------


def _bucket_labels(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = since.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        start = start.replace(hour=0)
    out = []
    while start <= until:
        out.append(start)
        start += step
    return out


def _percentiles(tasks: QuerySet[Task], agent_ids: list[str]) -> dict[str, dict[str, float]]:
    """Exact p50/p95 (nearest rank) of the tasks' durations per agent: one count, one window query."""
    finished = tasks.filter(duration__isnull=False, agent_id__in=agent_ids)
    counts = dict(finished.values("agent_id").annotate(n=Count("id")).values_list("agent_id", "n").order_by())
    if not counts:
        return {}
    targets = {a: {"p50": math.ceil(n * 0.5), "p95": math.ceil(n * 0.95)} for a, n in counts.items()}
    wanted = Q()
    for agent_id, ranks in targets.items():
        wanted |= Q(agent_id=agent_id, rank__in=set(ranks.values()))
    ranked = finished.annotate(
        rank=Window(RowNumber(), partition_by=[F("agent_id")], order_by=[F("duration").asc(), F("id").asc()])
    )
    out: dict[str, dict[str, float]] = {a: {"n": n} for a, n in counts.items()}
    for row in ranked.filter(wanted).values("agent_id", "duration", "rank"):
        for name, rank in targets[row["agent_id"]].items():
            if rank == row["rank"]:
                out[row["agent_id"]][name] = row["duration"]
    return out


def _bucket_expression(bucket: str) -> Any:
    """The time bucket of created_at in SQL. SQLite's Trunc is a Python function called per row (the
    slowest part of the page); its datetimes are UTC text, so a prefix of the text is the bucket."""
    if connection.vendor == "sqlite":
        return Substr("created_at", 1, 13 if bucket == "hour" else 10, output_field=CharField())
    return Trunc("created_at", bucket, tzinfo=UTC)


def _bucket_value(value: Any, bucket: str) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    text = value + (":00" if bucket == "hour" else " 00:00")
    return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=UTC)


def build(organization_id: str, range_name: str, bucket: str, now: datetime | None = None) -> dict[str, Any]:
    """Every chart and table of the dashboard for one organization and range."""
    now = now or timezone.now()
    since = now - RANGES[range_name]
    tasks = Task.objects.filter(organization_id=organization_id, created_at__gte=since, created_at__lte=now)
    agents = dict(Agent.objects.filter(organization_id=organization_id).values_list("id", "name"))
    tokens = Coalesce(Cast(KT("tokens__prompt_tokens"), IntegerField()), 0) + Coalesce(
        Cast(KT("tokens__completion_tokens"), IntegerField()), 0
    )
    groups = list(
        tasks.annotate(t=_bucket_expression(bucket))
        .values("t", "agent_id", "status")
        .annotate(n=Count("id"), tok=Sum(tokens))
        .order_by()
    )
    buckets = _bucket_labels(since, now, bucket)
    index = {b: i for i, b in enumerate(buckets)}
    label = "%m-%d %H:00" if bucket == "hour" else "%m-%d"
    names = [b.strftime(label) for b in buckets]

    per_status: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(buckets))
    per_agent: dict[str, dict[str, int]] = defaultdict(lambda: {"total": 0, "failed": 0, "tokens": 0})
    tokens_per_agent: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(buckets))
    for g in groups:
        i = index.get(_bucket_value(g["t"], bucket))
        if i is None:
            continue
        per_status[g["status"]][i] += g["n"]
        stats = per_agent[g["agent_id"]]
        stats["total"] += g["n"]
        stats["failed"] += g["n"] if g["status"] in FAILED else 0
        stats["tokens"] += g["tok"] or 0
        tokens_per_agent[g["agent_id"]][i] += g["tok"] or 0

    statuses = [s for s in STATUS_ORDER if s in per_status]
    status_chart = columns(names, [(s, f"st-{s}", per_status[s]) for s in statuses])
    status_table = {
        "head": ["Bucket", *statuses, "Total"],
        "rows": [
            [
                names[i],
                *[int(per_status[s][i]) for s in statuses],
                int(sum(per_status[s][i] for s in statuses)),
            ]
            for i in range(len(buckets))
            if any(per_status[s][i] for s in statuses)
        ],
    }

    ordered = sorted(per_agent, key=lambda a: (-per_agent[a]["total"], agents.get(a, a)))
    colour = {a: f"series-{i % SERIES}" for i, a in enumerate(ordered)}
    failure_rows = []
    for a in ordered:
        s = per_agent[a]
        rate = 100 * s["failed"] / s["total"] if s["total"] else 0
        failure_rows.append(
            {"agent": agents.get(a, a), "total": s["total"], "failed": s["failed"], "rate": round(rate, 1)}
        )
    failure_chart = hbars(
        [(r["agent"], [(r["rate"], "st-failed", f"{r['agent']}: {r['rate']}%")]) for r in failure_rows],
        maximum=100,
    )

    durations = _percentiles(tasks, ordered)
    duration_rows = [
        {
            "agent": agents.get(a, a),
            "n": d["n"],
            "p50": round(d.get("p50", 0), 2),
            "p95": round(d.get("p95", 0), 2),
        }
        for a in ordered
        if (d := durations.get(a))
    ]
    duration_chart = hbars(
        [
            (
                r["agent"],
                [
                    (r["p50"], "p50", f"{r['agent']} p50: {r['p50']} s"),
                    (r["p95"], "p95", f"{r['agent']} p95: {r['p95']} s"),
                ],
            )
            for r in duration_rows
        ]
    )

    tools = list(
        ActivityEntry.objects.filter(
            kind=ActivityKind.TOOL_CALL,
            task__organization_id=organization_id,
            task__created_at__gte=since,
            task__created_at__lte=now,
        )
        .annotate(tool=KT("data__tool_name"))
        .values("tool")
        .annotate(calls=Count("id"), errors=Count("id", filter=Q(data__is_error=True)))
        .order_by("-calls", "tool")[:15]
    )
    tool_chart = hbars(
        [
            (
                t["tool"] or "?",
                [
                    (t["calls"], "calls", f"{t['tool']}: {t['calls']} calls"),
                    (t["errors"], "st-failed", f"{t['tool']}: {t['errors']} errors"),
                ],
            )
            for t in tools
        ]
    )

    token_series = [
        (agents.get(a, a), colour[a], tokens_per_agent[a]) for a in ordered if per_agent[a]["tokens"]
    ]
    token_chart = columns(names, token_series, unit=" tokens")
    token_table = {
        "head": ["Bucket", *[s[0] for s in token_series]],
        "rows": [
            [names[i], *[int(s[2][i]) for s in token_series]]
            for i in range(len(buckets))
            if any(s[2][i] for s in token_series)
        ],
    }
    return {
        "since": since,
        "now": now,
        "total": sum(s["total"] for s in per_agent.values()),
        "failed": sum(s["failed"] for s in per_agent.values()),
        "status_chart": status_chart,
        "status_table": status_table,
        "statuses": statuses,
        "failure_chart": failure_chart,
        "failure_rows": failure_rows,
        "duration_chart": duration_chart,
        "duration_rows": duration_rows,
        "tool_chart": tool_chart,
        "tools": tools,
        "token_chart": token_chart,
        "token_table": token_table,
        "token_legend": [(name, cls) for name, cls, _ in token_series],
    }


def cache_seconds() -> int:
    return int(getattr(settings, "CONSOLE_DASHBOARD_CACHE_SECONDS", 30))


def cached_build(organization_id: str, range_name: str, bucket: str) -> dict[str, Any]:
    """`build`, reused for CONSOLE_DASHBOARD_CACHE_SECONDS: on SQLite a 100k-task range costs ~1 s of
    scans, and trends at a glance do not need per-second freshness (the running list stays live)."""
    seconds = cache_seconds()
    if seconds <= 0:
        return build(organization_id, range_name, bucket)
    key = f"dashboard:{organization_id}:{range_name}:{bucket}"
    data = cache.get(key)
    if data is None:
        data = build(organization_id, range_name, bucket)
        cache.set(key, data, seconds)
    return data


def running_now(organization_id: str) -> list[Task]:
    """The tasks running now (the live part of the page, refreshed on its own)."""
    return list(
        Task.objects.filter(organization_id=organization_id, status__in=RUNNING)
        .select_related("agent")
        .order_by("-created_at")[:20]
    )


@member_page
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """/dashboard/: every member sees their organization's numbers; `?partial=running` the live list."""
    org = request.actor.organization_id
    if request.GET.get("partial") == "running":
        return render(request, "dashboard.html#running", {"running": running_now(org)})
    query = request.GET.copy()
    query.setdefault("range", DEFAULT_RANGE)  # shown selected in the form
    form = DashboardForm(query)
    if not form.is_valid():
        return render(request, "dashboard.html", {"nav": "dashboard", "form": form, "data": None}, status=400)
    data = cached_build(org, form.cleaned_data["range"], form.cleaned_data["bucket"])
    return render(
        request,
        "dashboard.html",
        {
            "nav": "dashboard",
            "form": form,
            "data": data,
            "bucket": form.cleaned_data["bucket"],
            "cache_seconds": cache_seconds(),
            "running": running_now(org),
        },
    )

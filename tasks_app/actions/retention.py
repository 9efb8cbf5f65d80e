"""Retention: the task-API function that deletes finished tasks older than their organization keeps.

Each batch is one transaction that deletes the tasks (events, activity entries and status changes go
with them) and writes its audit entry; the uploaded files are removed once that committed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from console import audit
from console.models import Organization
from console.retention import effective_days
from tasks_app.models import TERMINAL_STATUSES, Task

BATCH = 500


def purge_expired(now: datetime | None = None) -> dict[str, int]:
    """Delete every organization's finished tasks older than its retention; {organization id: count}."""
    now = now or timezone.now()
    purged: dict[str, int] = {}
    for org in Organization.objects.all():
        days = effective_days(org)
        if not days:
            continue
        cutoff = now - timedelta(days=days)
        while count := _purge_batch(org, days, cutoff):
            purged[org.pk] = purged.get(org.pk, 0) + count
    return purged


def _purge_batch(org: Organization, days: int, cutoff: datetime) -> int:
    files: list[str] = []
    with transaction.atomic():
        rows = list(
            Task.objects.filter(organization=org, created_at__lt=cutoff, status__in=TERMINAL_STATUSES)
            .order_by("created_at")
            .values_list("id", "uploads")[:BATCH]
        )
        if not rows:
            return 0
        for _, uploads in rows:
            files.extend(str(name) for name in (uploads or {}).values())
        Task.objects.filter(pk__in=[task_id for task_id, _ in rows]).delete()
        audit.record(
            None,
            "retention.purged",
            organization_id=org.pk,
            label=f"retention ({days} days)",
            object_type="tasks",
            object_label=f"{len(rows)} finished tasks created before {cutoff:%Y-%m-%d %H:%M}",
            changes={"tasks": {"from": len(rows), "to": 0}},
        )
        transaction.on_commit(lambda: [default_storage.delete(name) for name in files])
    return len(rows)

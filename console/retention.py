"""How long an organization keeps its finished tasks (their events, activity and uploads with them)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from console import audit
from console.access import Actor
from console.errors import Forbidden, Invalid
from console.models import Organization, Role

MAX_DAYS = 36_500


def effective_days(organization: Organization) -> int:
    """Days finished tasks are kept; 0 means forever."""
    if organization.retention_days is not None:
        return organization.retention_days
    return max(int(settings.TASK_RETENTION_DAYS or 0), 0)


def set_retention(actor: Actor, days: int | None) -> Organization:
    """Owners set their organization's retention; None falls back to the server's default."""
    if not actor.can(Role.OWNER):
        raise Forbidden(f"Changing retention needs the owner role; yours is {actor.role}")
    if days is not None and not 0 <= days <= MAX_DAYS:
        raise Invalid("retention_days", f"between 0 (forever) and {MAX_DAYS} days")
    with transaction.atomic():
        org = Organization.objects.select_for_update().get(pk=actor.organization_id)
        if org.retention_days == days:
            return org
        old, org.retention_days = org.retention_days, days
        org.save(update_fields=["retention_days"])
        audit.record(
            actor,
            "retention.changed",
            object_type="organization",
            object_id=org.pk,
            object_label=org.name,
            changes={"retention_days": {"from": old, "to": days}},
        )
    return org

"""manage.py purge_expired: delete finished tasks older than their organization's retention."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tasks_app.actions.retention import purge_expired


class Command(BaseCommand):
    help = "Delete finished tasks (with their events, activity and uploads) older than the retention."

    def handle(self, *args: object, **options: object) -> None:
        purged = purge_expired()
        total = sum(purged.values())
        self.stdout.write(f"Purged {total} tasks in {len(purged)} organizations.")

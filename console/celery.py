"""The Celery app: `celery -A console worker` finds it here (TASK_EXECUTION=celery).

Configured from Django's settings (the CELERY_* names in console/settings.py); the one task and
the stop command live in tasks_app/celery_executor.py, which the worker imports at start.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console", include=["tasks_app.celery_executor"])
app.config_from_object("django.conf:settings", namespace="CELERY")

"""The registry of the SDK's `@on_task` workers: one row per event-stream connection.

A row lives in the database (not in one process's memory) so that any server process can answer a
worker's heartbeat, list an agent's workers, and tell whether the holder of a delivered task is
still alive. Rows are written only by tasks_app.actions.workers.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from console.models import Agent, ApiKey, Organization


class Worker(models.Model):
    """A connected `@on_task` worker; a reconnect is a new worker (the SDK sends no identity)."""

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="workers")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    environment = models.CharField(max_length=32, blank=True, default="")
    connected_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    is_busy = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["agent", "disconnected_at"], name="worker_agent_live")]

    def __str__(self) -> str:
        return f"worker {self.id} of agent {self.agent_id}"

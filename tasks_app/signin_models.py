"""Which paused task waits for whose sign-in to which MCP server (issue 15).

One row per paused task: the owner (a member or an end user) and the graph item they must connect,
so a sign-in finds the tasks to resume, and the connections page lists a member's waiting tasks.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class SignInWait(models.Model):
    task = models.OneToOneField("tasks_app.Task", on_delete=models.CASCADE, related_name="signin_wait")
    organization = models.ForeignKey("console.Organization", on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(
        "console.Membership", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    external_user_id = models.CharField(max_length=200, blank=True, default="")
    graph_item_key = models.CharField(max_length=200)
    server_name = models.CharField(max_length=200, blank=True, default="")
    signin_url = models.CharField(max_length=1000, blank=True, default="")
    since = models.DateTimeField(default=timezone.now)
    deadline = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["organization", "graph_item_key"], name="signin_wait_item")]

    def __str__(self) -> str:
        return f"task {self.task_id} waits for a sign-in to {self.graph_item_key}"

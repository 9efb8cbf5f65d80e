"""Tasks, their durable event log and their activity log.

Only tasks_app.actions (the task API) writes these rows; everything else reads them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from console.errors import Conflict
from console.models import Agent, ApiKey, Framework, Organization, new_id


class Status(models.TextChoices):
    PENDING = "pending"
    EXECUTING = "executing"
    PAUSED = "paused"
    ERROR = "error"
    FAILED = "failed"
    COMPLETED = "completed"
    STOPPED = "stopped"


TERMINAL_STATUSES = frozenset({Status.ERROR, Status.FAILED, Status.COMPLETED, Status.STOPPED})
INTERNAL_STATUS_MAX = 255


class Task(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tasks")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tasks")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="sub_tasks"
    )
    triggering_agent_id = models.CharField(max_length=64, blank=True, default="")
    created_by_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    internal_status = models.CharField(max_length=INTERNAL_STATUS_MAX, null=True, blank=True, default=None)
    result = models.TextField(null=True, blank=True)
    is_manually_stopped = models.BooleanField(default=False)
    stop_requested_at = models.DateTimeField(null=True, blank=True)

    input_text = models.TextField(blank=True, default="")
    input_files = models.JSONField(default=list, blank=True)
    input_attachments = models.JSONField(default=list, blank=True)
    uploads = models.JSONField(default=dict, blank=True)  # file URL -> storage name of uploaded files
    input_user = models.JSONField(null=True, blank=True)
    user_id = models.CharField(max_length=200, blank=True, default="", db_index=True)
    # Whose vault tokens the running turn uses: a member, or an end user a service key named (never both).
    vault_member = models.ForeignKey(
        "console.Membership", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    vault_external_id = models.CharField(max_length=200, blank=True, default="")
    user_tokens_encrypted = models.TextField(blank=True, default="")

    events_streaming = models.BooleanField(default=False)
    title = models.CharField(max_length=500, blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="")
    output_format = models.CharField(max_length=16, blank=True, default="")
    output_schema = models.JSONField(null=True, blank=True)
    payload_extension = models.JSONField(null=True, blank=True)
    additional_context = models.TextField(blank=True, default="")
    instructions_override = models.TextField(blank=True, default="")
    expected_output = models.TextField(blank=True, default="")
    think_mode = models.CharField(max_length=16, default="default")
    disable_attachment_injection = models.BooleanField(default=False)
    tool_call_limit = models.PositiveIntegerField(null=True, blank=True)
    llm_model_provider = models.CharField(max_length=64, blank=True, default="")
    llm_model_name = models.CharField(max_length=200, blank=True, default="")
    llm_reasoning_effort = models.CharField(max_length=16, blank=True, default="")
    return_metrics = models.BooleanField(default=False)
    last_executed_node_id = models.CharField(max_length=200, blank=True, default="")
    agent_version = models.CharField(max_length=64, blank=True, default="")
    run_locally = models.BooleanField(default=False)  # the SDK's CLI runs it itself: never sent to a worker

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    tokens = models.JSONField(default=dict, blank=True)
    used_tools = models.JSONField(default=list, blank=True)
    duration = models.FloatField(null=True, blank=True)
    turns = models.PositiveIntegerField(default=1)
    metrics = models.JSONField(null=True, blank=True)

    # Event log and execution bookkeeping.
    last_seq = models.PositiveIntegerField(default=0)
    last_activity = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "agent", "-created_at"], name="task_org_agent_created"),
            models.Index(fields=["organization", "user_id", "-created_at"], name="task_org_user_created"),
            models.Index(fields=["status", "lease_expires_at"], name="task_status_lease"),
            # The console's history: keyset pages in (created_at, id) order, and counts per status.
            models.Index(fields=["organization", "-created_at", "-id"], name="task_org_created_id"),
            models.Index(
                fields=["organization", "status", "-created_at", "-id"], name="task_org_status_created"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(vault_member__isnull=True) | models.Q(vault_external_id=""),
                name="task_one_vault_owner",
            )
        ]

    def __str__(self) -> str:
        return f"task {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def sub_execution_ids(self) -> list[str]:
        """Its sub-tasks' ids, oldest first (the Task JSON's `sub_executions`).

        A query per snapshot, unless the write that loaded this row knows the task has none yet
        (`mark_no_sub_tasks`): its snapshots are written on the runtime's hot path (created, claimed).
        """
        if self.__dict__.get("_no_sub_tasks"):
            return []
        return [str(pk) for pk in self.sub_tasks.order_by("created_at").values_list("id", flat=True)]

    def mark_no_sub_tasks(self) -> None:
        """Mark this loaded row as having no sub-tasks: only the runtime makes them, during a run.

        So it holds for a task just created and for the claim of its first run (turn 1, attempt 1),
        until the run starts: `forget_no_sub_tasks` before an object goes on to a run.
        """
        self.__dict__["_no_sub_tasks"] = True

    def forget_no_sub_tasks(self) -> None:
        """Undo `mark_no_sub_tasks`: this object's later snapshots ask for the sub-tasks again."""
        self.__dict__.pop("_no_sub_tasks", None)

    def status_for_update(self, requested: str | None, *, full_dump: bool) -> str | None:
        """The status an update asking for `requested` moves this task to (None: it stays), or Conflict.

        The row's rules: a final status is final (a follow-up turn is the one way back); pending is
        only ever the initial state; the server drives a built-in agent's run, so a caller may only
        finish or stop it. A full dump is the SDK's save() of a possibly stale copy: where a sparse
        update is refused, a full dump keeps the status and stores the rest.
        """
        if not requested or requested == self.status:
            return None
        if self.is_finished:
            refusal = f"Task {self.id} is already {self.status}; it cannot become {requested}"
        elif requested == Status.PENDING and full_dump:
            return None  # a stale copy cannot rewind a run
        elif requested not in TERMINAL_STATUSES and self.agent.framework == Framework.BUILTIN:
            refusal = (
                f"Task {self.id} is run by the server; it can be finished or stopped, not set {requested}"
            )
        else:
            return requested
        if full_dump:
            return None
        raise Conflict(refusal, status=self.status)


class TaskEvent(models.Model):
    """One row per event, `seq` gap-free per task: the truth both SSE and websockets replay."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    time = models.DateTimeField(default=timezone.now)
    data = models.JSONField(null=True)

    class Meta:
        ordering = ["task", "seq"]
        constraints = [models.UniqueConstraint(fields=["task", "seq"], name="uniq_task_event_seq")]

    def __str__(self) -> str:
        return f"{self.task_id}#{self.seq} {self.type}"


class ActivityKind(models.TextChoices):
    MESSAGE = "message"
    TOOL_CALL = "tool_call"
    REASONING = "reasoning"
    SUB_AGENT_TRIGGER = "sub_agent_trigger"
    AUTH = "auth"


class ActivityEntry(models.Model):
    """An entry of the activity thread; `data` holds the wire fields besides id and created_at."""

    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="activity")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=ActivityKind.choices)
    turn = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["task", "position"]
        constraints = [models.UniqueConstraint(fields=["task", "position"], name="uniq_activity_position")]

    def __str__(self) -> str:
        return f"{self.task_id} {self.kind} #{self.position}"


class InternalStatusChange(models.Model):
    """Who changed a task's internal status, when, and from what to what (written by the task API)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="internal_status_changes")
    changed_at = models.DateTimeField(default=timezone.now)
    changed_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    changed_by_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    changed_by_label = models.CharField(max_length=320, blank=True, default="")
    from_value = models.CharField(max_length=INTERNAL_STATUS_MAX, null=True, blank=True)
    to_value = models.CharField(max_length=INTERNAL_STATUS_MAX, null=True, blank=True)

    class Meta:
        ordering = ["task", "-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.from_value!r} -> {self.to_value!r}"


from tasks_app.signin_models import SignInWait  # noqa: E402, F401  (issue 15: tasks waiting for a sign-in)
from tasks_app.worker_models import Worker  # noqa: E402, F401 - a model of this app, in its own module

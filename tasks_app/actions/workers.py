"""The task API of the SDK's `@on_task` workers: register, heartbeat, deliver, take back.

A delivery is a claim with a lease, as for the built-in runtime: `deliver_task` sets the task's
`lease_owner` to the worker and gives it WORKER_ACK_SECONDS to acknowledge (the first `executing`
PATCH is the only ack the protocol has); once executing, the worker's heartbeats keep the lease.
`reap_deliveries` takes back what a silent or dead worker held: to the queue, or failed after
WORKER_MAX_ATTEMPTS deliveries. The worker's own PATCHes go through `actions.update_task`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from console.errors import Conflict, Forbidden, NotFound
from console.models import Framework, Role
from tasks_app.actions import (
    Actor,
    _action,
    _append_events,
    _async_twin,
    _finish,
    _save,
    _snapshot,
    _task_for_update,
    get_agent,
)
from tasks_app.models import Status, Task
from tasks_app.worker_models import Worker

SDK_CAPACITY = 6  # the SDK's fixed semaphore for @on_task (max_sync_workers): more would sit unread
PRUNE_AFTER = timedelta(hours=1)  # disconnected workers' rows are kept this long (their leases need them)


def _lease() -> timedelta:
    return timedelta(seconds=settings.WORKER_LEASE_SECONDS)


def register_worker(actor: Actor, agent_id: str, environment: str = "") -> Worker:
    """A new connection of an `@on_task` worker for one of the caller's external agents."""
    agent = get_agent(actor, agent_id)
    if not actor.can(Role.MEMBER):
        raise Forbidden("Your role (viewer) may read tasks but not run them as a worker")
    if agent.framework != Framework.EXTERNAL:
        raise Conflict(
            f"Agent {agent.id} is run by this server (framework {agent.framework}); "
            "only external agents take @on_task workers"
        )
    return Worker.objects.create(
        id=f"worker-{uuid.uuid4()}",
        organization_id=agent.organization_id,
        agent=agent,
        api_key_id=actor.api_key_id,
        environment=environment[:32],
    )


def get_worker(actor: Actor, worker_id: str, agent_id: str | None = None) -> Worker:
    """The caller's organization's worker (another organization's is unknown: 404)."""
    worker = Worker.objects.filter(pk=worker_id, organization_id=actor.organization_id).first()
    if worker is None or (agent_id and worker.agent_id != agent_id):
        raise NotFound(f"Worker {worker_id} not found")
    return worker


def worker_heartbeat(actor: Actor, worker_id: str, agent_id: str | None = None) -> Worker:
    """A heartbeat: the worker is alive, so are the leases of the tasks it is running (server clock)."""
    worker = get_worker(actor, worker_id, agent_id)
    now = timezone.now()
    with transaction.atomic():  # a write transaction: it takes its turn at SQLite's write gate
        Worker.objects.filter(pk=worker.id).update(last_heartbeat=now)
        Task.objects.filter(lease_owner=worker.id, status=Status.EXECUTING, agent_id=worker.agent_id).update(
            lease_expires_at=now + _lease()
        )
    worker.last_heartbeat = now
    return worker


def worker_capacity(actor: Actor, worker_id: str, is_busy: bool, agent_id: str | None = None) -> Worker:
    """What the worker says of its slots (informative: deliveries count its tasks in hand)."""
    worker = get_worker(actor, worker_id, agent_id)
    with transaction.atomic():
        Worker.objects.filter(pk=worker.id).update(is_busy=is_busy, last_heartbeat=timezone.now())
    worker.is_busy = is_busy
    return worker


def disconnect_worker(worker_id: str) -> None:
    """Its stream closed: no more deliveries. Its tasks keep their leases until they run out."""
    with transaction.atomic():
        Worker.objects.filter(pk=worker_id, disconnected_at__isnull=True).update(
            disconnected_at=timezone.now()
        )


def live_workers(actor: Actor, agent_id: str) -> list[tuple[Worker, list[str]]]:
    """The agent's connected workers with a recent heartbeat, each with the ids of its tasks in hand."""
    get_agent(actor, agent_id)
    since = timezone.now() - _lease()
    workers = list(
        Worker.objects.filter(
            agent_id=agent_id, disconnected_at__isnull=True, last_heartbeat__gte=since
        ).order_by("connected_at", "id")
    )
    held: dict[str, list[str]] = {w.id: [] for w in workers}
    for task_id, owner in (
        Task.objects.filter(lease_owner__in=held, status__in=(Status.PENDING, Status.EXECUTING))
        .order_by("created_at")
        .values_list("id", "lease_owner")
    ):
        held[owner].append(task_id)
    return [(w, held[w.id]) for w in workers]


def tasks_in_hand(worker_ids: list[str]) -> dict[str, int]:
    """How many undelivered-or-running tasks each worker holds (its used slots)."""
    rows = (
        Task.objects.filter(lease_owner__in=worker_ids, status__in=(Status.PENDING, Status.EXECUTING))
        .values("lease_owner")
        .annotate(n=Count("id"))
    )
    return {r["lease_owner"]: r["n"] for r in rows}


def busy_workers(worker_ids: list[str]) -> set[str]:
    """The workers whose last capacity update said all their slots are taken."""
    return set(Worker.objects.filter(pk__in=worker_ids, is_busy=True).values_list("id", flat=True))


def deliverable(agent_id: str, limit: int) -> list[str]:
    """The agent's oldest tasks waiting for a worker (not held, not the CLI's own, not stopping)."""
    if limit <= 0:
        return []
    return list(
        Task.objects.filter(
            agent_id=agent_id,
            status=Status.PENDING,
            lease_owner="",
            run_locally=False,
            stop_requested_at__isnull=True,
        )
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )


@_action
def deliver_task(task_id: str, worker_id: str) -> Task | None:
    """Claim a waiting task for a worker (a conditional UPDATE: never two holders); None if gone."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Task.objects.filter(
            pk=task_id,
            status=Status.PENDING,
            lease_owner="",
            run_locally=False,
            stop_requested_at__isnull=True,
            agent__framework=Framework.EXTERNAL,
        ).update(
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=settings.WORKER_ACK_SECONDS),
            attempts=F("attempts") + 1,
        )
        if not claimed:
            return None
        return Task.objects.select_related("agent").get(pk=task_id)


@_action
def reap_deliveries(max_attempts: int) -> list[str]:
    """Take back tasks whose worker went silent; the ids of the agents that have tasks waiting again.

    Unacknowledged (still pending) past WORKER_ACK_SECONDS, or executing with neither lease nor
    heartbeat for WORKER_LEASE_SECONDS: back to the queue, or failed after `max_attempts` deliveries.
    """
    now = timezone.now()
    external = Q(agent__framework=Framework.EXTERNAL) & ~Q(lease_owner="")
    expired = list(
        Task.objects.filter(
            external,
            status__in=(Status.PENDING, Status.EXECUTING),
            lease_expires_at__lt=now,
        ).values_list("id", flat=True)
    )
    agents: set[str] = set()
    for task_id in expired:
        with transaction.atomic():
            task = _task_for_update(task_id)
            if task.is_finished or not task.lease_owner or not task.lease_expires_at:
                continue
            if task.lease_expires_at >= now:
                continue
            if task.status == Status.EXECUTING:
                beat = Worker.objects.filter(pk=task.lease_owner).values_list("last_heartbeat", flat=True)
                if beat and beat[0] >= now - _lease():  # acked before the worker's next heartbeat
                    task.lease_expires_at = beat[0] + _lease()
                    Task.objects.filter(pk=task.id).update(lease_expires_at=task.lease_expires_at)
                    continue
            if task.attempts >= max_attempts:
                what = "did not acknowledge it" if task.status == Status.PENDING else "stopped responding"
                _finish(
                    task,
                    Status.FAILED,
                    f"The worker this task was delivered to {what} ({task.attempts} deliveries); giving up.",
                )
                continue
            was = task.status
            task.status = Status.PENDING
            task.lease_owner = ""
            task.lease_expires_at = None
            _save(task, "status", "lease_owner", "lease_expires_at")
            if was != Status.PENDING:
                _append_events(task, [("task_updated", _snapshot(task))])
            agents.add(task.agent_id)
    Worker.objects.filter(disconnected_at__lt=now - PRUNE_AFTER).delete()
    return sorted(agents)


adeliver_task = _async_twin(deliver_task.__wrapped__)
areap_deliveries = _async_twin(reap_deliveries.__wrapped__)

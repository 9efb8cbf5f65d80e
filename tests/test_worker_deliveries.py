"""Deliveries to `@on_task` workers as leased claims: one holder, taken back when the holder goes silent.

The task API functions of tasks_app.actions.workers against the real database; the wire and real
worker processes are in test_worker_routes.py and test_sdk_workers.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tasks_app import actions
from tasks_app.actions import workers as actions_workers
from tasks_app.models import Status, Task, Worker
from tests.conftest import create_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(alice, external_agent) -> Task:
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body("for a worker"))
    assert r.status_code == 200, r.content
    return Task.objects.get(pk=r.json()["id"])


def worker(alice, external_agent) -> Worker:
    return actions_workers.register_worker(actions.Actor(alice.org.id, "owner"), external_agent.id, "local")


def expire(task: Task) -> None:
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_it_leaves_an_external_delivery_to_the_workers_reaper(alice, external_agent, pending):
    w = worker(alice, external_agent)
    actions_workers.deliver_task(pending.id, w.id)
    Task.objects.filter(pk=pending.pk).update(status=Status.EXECUTING)
    expire(pending)
    assert actions.requeue_expired(3) == []  # the built-in reaper would hand it to the built-in pool


def test_it_delivers_a_task_to_one_worker_only(alice, external_agent, pending):
    first, second = worker(alice, external_agent), worker(alice, external_agent)
    assert actions_workers.deliver_task(pending.id, first.id) is not None
    assert actions_workers.deliver_task(pending.id, second.id) is None
    pending.refresh_from_db()
    assert (pending.lease_owner, pending.attempts) == (first.id, 1)
    assert actions_workers.deliverable(external_agent.id, 10) == []


def test_it_takes_back_an_unacknowledged_delivery(alice, external_agent, pending):
    w = worker(alice, external_agent)
    actions_workers.deliver_task(pending.id, w.id)
    expire(pending)
    assert actions_workers.reap_deliveries(3) == [external_agent.id]
    pending.refresh_from_db()
    assert (pending.status, pending.lease_owner) == (Status.PENDING, "")
    assert actions_workers.deliverable(external_agent.id, 10) == [pending.id]


def test_it_keeps_a_running_task_while_its_worker_beats(alice, external_agent, pending):
    w = worker(alice, external_agent)
    actions_workers.deliver_task(pending.id, w.id)
    Task.objects.filter(pk=pending.pk).update(status=Status.EXECUTING)  # the executing PATCH (the ack)
    expire(pending)
    actions_workers.worker_heartbeat(actions.Actor(alice.org.id, "owner"), w.id)
    assert actions_workers.reap_deliveries(3) == []
    pending.refresh_from_db()
    assert (pending.status, pending.lease_owner) == (Status.EXECUTING, w.id)
    assert pending.lease_expires_at > timezone.now()


def test_it_requeues_a_silent_workers_task_then_fails_it_after_the_last_attempt(
    alice, external_agent, pending
):
    for attempt in (1, 2):
        w = worker(alice, external_agent)
        actions_workers.deliver_task(pending.id, w.id)
        Task.objects.filter(pk=pending.pk).update(status=Status.EXECUTING)
        Worker.objects.filter(pk=w.id).update(last_heartbeat=timezone.now() - timedelta(minutes=5))
        expire(pending)
        actions_workers.reap_deliveries(2)
        pending.refresh_from_db()
        if attempt == 1:
            assert (pending.status, pending.lease_owner) == (Status.PENDING, "")
    assert pending.status == Status.FAILED
    assert "stopped responding (2 deliveries)" in pending.result
    assert pending.lease_owner == ""


def test_it_does_not_deliver_a_task_the_cli_runs_itself(alice, external_agent):
    r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body("local", run_locally=True))
    task = Task.objects.get(pk=r.json()["id"])
    assert task.run_locally
    assert actions_workers.deliverable(external_agent.id, 10) == []
    assert actions_workers.deliver_task(task.id, worker(alice, external_agent).id) is None

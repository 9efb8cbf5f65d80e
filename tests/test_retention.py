"""Retention: off by default; an organization's setting (or the server default) makes purge_expired
delete finished tasks older than it, with their rows and files, never running ones, never another
organization's; each purge and each change of the setting is on the audit log."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from console.models import Agent, AuditEvent
from tasks_app.actions.retention import purge_expired
from tasks_app.models import ActivityEntry, Task, TaskEvent
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def old_task(org, status: str = "completed", days: int = 40, **extra) -> Task:
    agent = Agent.objects.get_or_create(organization=org, unique_name="keep", defaults={"name": "Keep"})[0]
    task = Task.objects.create(
        organization=org,
        agent=agent,
        status=status,
        created_at=timezone.now() - timedelta(days=days),
        **extra,
    )
    TaskEvent.objects.create(task=task, seq=1, type="task_created", time=task.created_at, data={})
    ActivityEntry.objects.create(task=task, position=1, kind="message", data={"role": "user"})
    return task


def test_it_keeps_everything_by_default(alice):
    old_task(alice.org, days=4000)
    assert purge_expired() == {}
    assert Task.objects.count() == 1


def test_it_purges_old_finished_tasks_with_their_rows_and_files(
    alice, charlie, django_capture_on_commit_callbacks
):
    name = default_storage.save(f"retention-{uuid.uuid4().hex}.txt", ContentFile(b"x"))
    gone = old_task(alice.org, uploads={"http://127.0.0.1/f": name})
    running = old_task(alice.org, status="executing")
    recent = old_task(alice.org, days=5)
    theirs = old_task(charlie.org)
    alice.org.retention_days = 30
    alice.org.save()
    with django_capture_on_commit_callbacks(execute=True):  # the files go once the deletion committed
        call_command("purge_expired", stdout=io.StringIO())
    assert set(Task.objects.values_list("id", flat=True)) == {running.id, recent.id, theirs.id}
    assert not TaskEvent.objects.filter(task_id=gone.id).exists()
    assert not ActivityEntry.objects.filter(task_id=gone.id).exists()
    assert not default_storage.exists(name)
    entry = AuditEvent.objects.get(action="retention.purged")
    assert entry.organization_id == alice.org.id and entry.changes == {"tasks": {"from": 1, "to": 0}}


def test_the_server_default_applies_unless_the_organization_says_forever(alice, charlie, settings):
    settings.TASK_RETENTION_DAYS = 30
    old_task(alice.org)
    old_task(charlie.org)
    charlie.org.retention_days = 0
    charlie.org.save()
    assert purge_expired() == {alice.org.id: 1}
    assert Task.objects.filter(organization=charlie.org).count() == 1


def test_owners_set_it_on_the_page_and_admins_only_see_it(alice, bob):
    client = signed_in(alice)
    page = client.get("/retention/").content.decode()
    assert "kept forever" in page
    assert client.post("/retention/", {"retention_days": "90"}).status_code == 302
    assert "90 days" in client.get("/retention/").content.decode()
    assert AuditEvent.objects.get(action="retention.changed").changes == {
        "retention_days": {"from": None, "to": 90}
    }
    r = client.post("/retention/", {"retention_days": "-1"})
    assert r.status_code == 400 and 'id="id_retention_days_error"' in r.content.decode()
    bob.member.role = "admin"
    bob.member.save()
    admin = signed_in(bob)
    assert admin.get("/retention/").status_code == 200
    assert admin.post("/retention/", {"retention_days": "1"}).status_code == 403


def test_members_cannot_see_it_and_charlie_sees_only_his_own(alice, bob, charlie):
    alice.org.retention_days = 7
    alice.org.save()
    assert signed_in(bob).get("/retention/").status_code == 403
    page = signed_in(charlie).get("/retention/").content.decode()
    assert "kept forever" in page and "7 days" not in page

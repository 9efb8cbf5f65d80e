"""/tasks/new/: Agent, Prompt, Files, stream; the task runs as the signed-in member."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tasks_app.models import Task
from tests.console_helpers import signed_in
from tests.test_console_history import agent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = tmp_path


def test_the_form_has_labelled_fields_and_one_button(bob):
    writer = agent(bob.org, "Writer")
    html = signed_in(bob).get("/tasks/new/").content.decode()
    for label in ("Agent", "Prompt", "Files", "File URLs"):
        assert f">{label}:</label>" in html
    assert f'<option value="{writer.id}">Writer</option>' in html
    assert ">Create task</button>" in html and 'enctype="multipart/form-data"' in html


def test_it_creates_the_task_as_the_member_and_lands_on_the_live_view(bob):
    writer = agent(bob.org, "Writer")
    client = signed_in(bob)
    upload = SimpleUploadedFile("notes.txt", b"hello", content_type="text/plain")
    r = client.post(
        "/tasks/new/",
        {
            "agent": writer.id,
            "prompt": "Summarise",
            "urls": "https://example.com/a.pdf\n",
            "stream": "on",
            "files": [upload],
        },
    )
    task = Task.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/tasks/{task.id}/"
    user = bob.member.user
    assert (task.input_user["id"], task.input_user["email"]) == (bob.member.vault_id, user.email)
    assert task.vault_member_id == bob.member.pk and not task.vault_external_id  # the vault's owner is bob
    assert task.created_by_user_id == user.pk and task.events_streaming and task.input_text == "Summarise"
    assert task.input_files[0] == "https://example.com/a.pdf" and task.input_files[1].endswith("notes.txt")
    assert task.source == "console"


def test_it_says_what_is_wrong_next_to_the_field(bob, charlie):
    theirs = agent(charlie.org, "Theirs")
    r = signed_in(bob).post("/tasks/new/", {"agent": theirs.id, "prompt": "", "urls": "ftp://x"})
    assert r.status_code == 400
    html = r.content.decode()
    assert 'id="id_agent_error"' in html and "Select a valid choice" in html
    assert 'id="id_prompt_error"' in html and "This field is required." in html
    assert 'id="id_urls_error"' in html and "Not an http(s) link" in html
    assert not Task.objects.exists()


def test_too_many_files_is_refused_at_the_field(bob, settings):
    settings.TASK_MAX_FILES = 1
    writer = agent(bob.org, "Writer")
    r = signed_in(bob).post(
        "/tasks/new/", {"agent": writer.id, "prompt": "x", "urls": "https://a.test/1\nhttps://a.test/2"}
    )
    assert r.status_code == 400 and "At most 1 files per task" in r.content.decode()


def test_a_viewer_may_not_create_tasks(vera):
    agent(vera.org, "Writer")
    client = signed_in(vera)
    assert client.get("/tasks/new/").status_code == 403
    assert "New task" not in client.get("/tasks/").content.decode()

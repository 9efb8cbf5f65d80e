"""/tasks/<id>/: the conversation from the log, Markdown made safe, tool cards, stop, internal
status with its history, follow-up; /tasks/<id>/activity/: the review with its tool summary."""

from __future__ import annotations

from datetime import timedelta

import pytest

from console.web.session import actor_for_membership
from tasks_app import actions
from tasks_app.models import InternalStatusChange, Task, TaskEvent
from tests.console_helpers import signed_in
from tests.test_console_history import agent, make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def worked(alice):
    """A task an external worker ran: text with hostile Markdown, a tool call, reasoning, auth."""
    writer = agent(alice.org, "Writer")
    task = make(alice, writer, "Check the weather", status="executing")
    actor = actor_for_membership(alice.member)
    actions.push_events(
        actor,
        task.id,
        [
            ("think", {"title": "Plan", "thought": "Look it up first."}),
            (
                "tool_call_request",
                {
                    "tool_call_id": "c1",
                    "tool_name": "weather",
                    "payload": {"city": "Oslo", "api_key": "sk-live-123456"},
                },
            ),
            (
                "tool_call_result",
                {
                    "tool_call_id": "c1",
                    "tool_name": "weather",
                    "payload": {"city": "Oslo"},
                    "result": {"temp": -3},
                    "is_error": False,
                },
            ),
            ("tool_call_request", {"tool_call_id": "c2", "tool_name": "forecast", "payload": {}}),
            (
                "tool_call_result",
                {"tool_call_id": "c2", "tool_name": "forecast", "result": "boom", "is_error": True},
            ),
            (
                "auth_event",
                {
                    "type": "token_issue",
                    "data": {"message": "Jira needs you to sign in", "server_name": "Jira"},
                },
            ),
            ("chunk", "It is **cold**. <script>alert(1)</script> [x](javascript:alert(1))"),
        ],
    )
    TaskEvent.objects.filter(task=task, type="tool_call_result", data__tool_call_id="c1").update(
        time=TaskEvent.objects.get(task=task, type="tool_call_request", data__tool_call_id="c1").time
        + timedelta(seconds=2)
    )
    return task


def test_it_renders_the_conversation_from_the_log_safely(alice, worked):
    html = signed_in(alice).get(f"/tasks/{worked.id}/").content.decode()
    assert "Check the weather" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the model's raw HTML is shown as text
    assert 'data-tool="c1" data-state="completed"' in html and "Oslo" in html and "2.00 s" in html
    assert 'data-tool="c2" data-state="failed"' in html and ">Error</dt>" in html
    assert "sk-live-123456" not in html  # secrets masked in the arguments
    assert "Jira needs you to sign in" in html and "Look it up first." in html
    assert f'data-since="{Task.objects.get(pk=worked.id).last_seq}"' in html
    assert ">Stop</button>" in html


def test_a_finished_answer_is_markdown_and_sanitised(alice, worked):
    actor = actor_for_membership(alice.member)
    from tasks_app.schemas import TaskUpdateIn

    actions.update_task(
        actor, worked.id, TaskUpdateIn(status="completed"), fields={"status"}, full_dump=False
    )
    html = signed_in(alice).get(f"/tasks/{worked.id}/").content.decode()
    page = html.split("<template")[0]
    assert "<strong>cold</strong>" in page
    assert "<script>alert" not in page and 'href="javascript:' not in page
    assert ">Follow-up:</label>" in page and ">Send</button>" in page and ">Stop</button>" not in page


def test_another_organization_gets_404_everywhere(charlie, worked):
    client = signed_in(charlie)
    for path in ("", "activity/"):
        assert client.get(f"/tasks/{worked.id}/{path}").status_code == 404
    for path in ("stop/", "internal-status/", "follow-up/"):
        assert (
            client.post(f"/tasks/{worked.id}/{path}", {"internal_status": "x", "prompt": "x"}).status_code
            == 404
        )
    assert Task.objects.get(pk=worked.id).status == "executing"


def test_a_member_stops_a_running_task_and_a_finished_one_is_a_409(bob, worked):
    client = signed_in(bob)
    r = client.post(f"/tasks/{worked.id}/stop/", headers={"HX-Request": "true"})
    assert r.status_code == 204
    assert Task.objects.get(pk=worked.id).status == "stopped"
    again = client.post(f"/tasks/{worked.id}/stop/", headers={"HX-Request": "true"})
    assert again.status_code == 409 and b"already stopped" in again.content


def test_a_viewer_reads_but_may_not_act(vera, worked):
    client = signed_in(vera)
    html = client.get(f"/tasks/{worked.id}/").content.decode()
    assert ">Stop</button>" not in html and 'name="internal_status"' not in html
    assert client.post(f"/tasks/{worked.id}/stop/").status_code == 403
    assert client.post(f"/tasks/{worked.id}/internal-status/", {"internal_status": "x"}).status_code == 403
    assert Task.objects.get(pk=worked.id).status == "executing"


def test_internal_status_is_saved_with_its_history(bob, worked):
    client = signed_in(bob)
    r = client.post(f"/tasks/{worked.id}/internal-status/", {"internal_status": "awaiting review"})
    assert r.status_code == 302
    r = client.post(
        f"/tasks/{worked.id}/internal-status/",
        {"internal_status": "sent to customer"},
        headers={"HX-Request": "true"},
    )
    assert r.status_code == 200 and "<html" not in r.content.decode() and "Saved." in r.content.decode()
    assert Task.objects.get(pk=worked.id).internal_status == "sent to customer"
    changes = list(InternalStatusChange.objects.filter(task=worked).order_by("changed_at", "id"))
    assert [(c.from_value, c.to_value, c.changed_by_label) for c in changes] == [
        (None, "awaiting review", "bob@example.com"),
        ("awaiting review", "sent to customer", "bob@example.com"),
    ]
    html = client.get(f"/tasks/{worked.id}/").content.decode()
    assert "bob@example.com: “awaiting review” → “sent to customer”" in html


def test_an_internal_status_over_255_characters_is_refused_next_to_the_field(bob, worked):
    r = signed_in(bob).post(
        f"/tasks/{worked.id}/internal-status/", {"internal_status": "x" * 256}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 422
    assert 'id="id_internal_status_error"' in r.content.decode()
    assert "at most 255 characters" in r.content.decode()
    assert Task.objects.get(pk=worked.id).internal_status is None


def test_a_follow_up_continues_the_same_task_as_a_new_turn(bob, worked):
    client = signed_in(bob)
    running = client.post(f"/tasks/{worked.id}/follow-up/", {"prompt": "And tomorrow?"})
    assert running.status_code == 409 and "a follow-up needs a finished task" in running.content.decode()
    client.post(f"/tasks/{worked.id}/stop/")
    r = client.post(f"/tasks/{worked.id}/follow-up/", {"prompt": "And tomorrow?"})
    assert r.status_code == 302 and r["Location"] == f"/tasks/{worked.id}/"
    task = Task.objects.get(pk=worked.id)
    assert task.turns == 2 and task.status == "pending" and task.input_text == "And tomorrow?"
    html = client.get(f"/tasks/{worked.id}/").content.decode()
    assert 'data-turn="2"' in html and "And tomorrow?" in html


def test_the_activity_review_marks_turns_filters_kinds_and_sums_tool_use(alice, worked):
    client = signed_in(alice)
    html = client.get(f"/tasks/{worked.id}/activity/").content.decode()
    assert "Turn 1" in html and 'data-kind="reasoning"' in html and 'data-kind="tool_call"' in html
    assert '<td>weather</td><td class="num">1</td><td class="num">0</td><td class="num">2.00 s</td>' in html
    assert '<td>forecast</td><td class="num">1</td><td class="num">1</td>' in html
    only_tools = client.get(f"/tasks/{worked.id}/activity/?kind=tool_call").content.decode()
    assert 'data-kind="reasoning"' not in only_tools and 'data-kind="tool_call"' in only_tools
    assert "sk-live-123456" not in html

"""The live task view turns a login_required auth event into a Sign in button (safe URLs only)."""

from __future__ import annotations

import pytest

from console.web.session import actor_for_membership
from tasks_app import actions
from tests.console_helpers import signed_in
from tests.test_console_history import agent, make

pytestmark = pytest.mark.django_db


def pushed(alice, url: str):
    task = make(alice, agent(alice.org, "Worker"), "Use Jira", status="executing")
    event = {
        "type": "login_required",
        "data": {"url": url, "server_name": "Jira", "message": "Sign in to Jira"},
    }
    actions.push_events(actor_for_membership(alice.member), task.id, [("auth_event", event)])
    return task


def test_a_login_required_event_shows_a_sign_in_button(alice):
    task = pushed(alice, "/connections/signin/abc/")
    html = signed_in(alice).get(f"/tasks/{task.id}/").content.decode()
    assert 'href="/connections/signin/abc/"' in html and ">Sign in</a>" in html


def test_a_javascript_url_is_never_linked(alice):
    task = pushed(alice, "javascript:alert(1)")
    html = signed_in(alice).get(f"/tasks/{task.id}/").content.decode()
    assert "javascript:alert(1)" not in html and ">Sign in</a>" not in html.split('id="tpl-auth"')[0]


def test_a_paused_task_says_it_waits_for_a_sign_in(alice):
    task = make(alice, agent(alice.org, "Worker"), "Use Jira", status="paused")
    html = signed_in(alice).get(f"/tasks/{task.id}/").content.decode()
    assert "Waiting for a sign-in…" in html

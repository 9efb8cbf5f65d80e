"""GET /api/activity/{agent_id}/{task_id}?limit=&after=: the activity log in pages (the SDK's call stays whole)."""

from __future__ import annotations

import pytest
from django.test import override_settings


@pytest.fixture
def long_task(alice, task_of):
    """A task whose log is the user message and seven thoughts (eight entries)."""
    task = task_of("think a lot")
    events = [{"type": "think", "data": {"thought": f"thought {i}"}} for i in range(7)]
    assert alice.post(f"/api/agent-execution/{task['id']}/events/push", events).status_code == 200
    return task


def thoughts(page: dict) -> list[str]:
    return [m.get("thought") or m["content"]["text"] for m in page["messages"]]


def test_the_sdks_unpaged_call_still_gets_the_whole_log(alice, external_agent, long_task):
    with override_settings(ACTIVITY_PAGE_MAX=3):
        r = alice.get(f"/api/activity/{external_agent.id}/{long_task['id']}")
    assert r.status_code == 200
    assert len(r.json()["messages"]) == 8
    assert "next_after" not in r.json()


def test_it_pages_through_the_log(alice, external_agent, long_task):
    url = f"/api/activity/{external_agent.id}/{long_task['id']}"
    seen, after, pages = [], None, 0
    while True:
        r = alice.get(f"{url}?limit=3" + (f"&after={after}" if after is not None else ""))
        assert r.status_code == 200, r.content
        page = r.json()
        assert page["id"] == long_task["id"] and len(page["messages"]) <= 3
        seen += thoughts(page)
        pages += 1
        after = page["next_after"]
        if after is None:
            break
    assert pages == 3
    assert seen == ["think a lot", *(f"thought {i}" for i in range(7))]


def test_a_page_that_ends_the_log_says_so(alice, external_agent, long_task):
    r = alice.get(f"/api/activity/{external_agent.id}/{long_task['id']}?limit=8")
    assert len(r.json()["messages"]) == 8 and r.json()["next_after"] is None


def test_after_alone_pages_with_the_largest_page(alice, external_agent, long_task):
    with override_settings(ACTIVITY_PAGE_MAX=5):
        r = alice.get(f"/api/activity/{external_agent.id}/{long_task['id']}?after=1")
    assert thoughts(r.json()) == [f"thought {i}" for i in range(5)]
    assert r.json()["next_after"] == 6


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("limit=0", "limit", "must be between 1 and 3"),
        ("limit=4", "limit", "must be between 1 and 3"),
        ("limit=x", "limit", "must be an integer"),
        ("after=-1", "after", "must be between 0 and 2147483647"),
    ],
)
def test_it_refuses_bad_paging(alice, external_agent, long_task, query, field, message):
    with override_settings(ACTIVITY_PAGE_MAX=3):
        r = alice.get(f"/api/activity/{external_agent.id}/{long_task['id']}?{query}")
    assert r.status_code == 422
    assert r.json() == {"detail": f"{field}: {message}", "field": field}


def test_another_organization_cannot_page_it(charlie, external_agent, long_task):
    r = charlie.get(f"/api/activity/{external_agent.id}/{long_task['id']}?limit=2")
    assert r.status_code == 404

"""/dashboard/: tasks per status over time, failure rate, p50/p95 duration per agent, tool usage and
tokens, each as an SVG chart with its numbers in a table; running tasks; one organization only."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from console.models import Agent
from tasks_app.models import ActivityEntry, Task
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def seed(org, name: str, statuses: list[str], durations: list[float | None], ago: timedelta) -> Agent:
    agent = Agent.objects.create(organization=org, name=name, unique_name=name.lower())
    for i, (status, duration) in enumerate(zip(statuses, durations, strict=True)):
        Task.objects.create(
            organization=org,
            agent=agent,
            status=status,
            duration=duration,
            tokens={"prompt_tokens": 10, "completion_tokens": 5},
            created_at=timezone.now() - ago - timedelta(minutes=i),
            input_text=f"{name} task {i}",
        )
    return agent


def cells(html: str, caption_text: str) -> list[list[str]]:
    """The rows of the numbers table that follows the heading `caption_text`."""
    section = html.split(caption_text, 1)[1].split("</figure>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section, re.S)]


def test_it_shows_failure_rate_and_exact_percentiles_per_agent(alice):
    seed(
        alice.org,
        "Scout",
        ["completed"] * 8 + ["failed", "error"],
        [float(i) for i in range(1, 11)],
        timedelta(hours=2),
    )
    seed(alice.org, "Clerk", ["completed"] * 4, [0.5, 0.5, 0.5, 9.0], timedelta(days=2))
    html = signed_in(alice).get("/dashboard/").content.decode()
    assert cells(html, "Failure rate per agent")[1:] == [
        ["Scout", "10", "2", "20.0 %"],
        ["Clerk", "4", "0", "0.0 %"],
    ]
    # nearest rank: p50 of 1..10 is the 5th value, p95 the 10th
    assert cells(html, "Duration per agent")[1:] == [
        ["Scout", "10", "5.0", "10.0"],
        ["Clerk", "4", "0.5", "9.0"],
    ]
    assert html.count('<svg class="chart"') == 4 and "No tool calls in this range." in html
    assert "14 tasks" in html and "2 failed" in html


def test_it_counts_tasks_per_status_per_bucket_and_tokens(alice):
    seed(alice.org, "Scout", ["completed", "completed", "failed"], [1.0, 1.0, 1.0], timedelta(hours=1))
    html = signed_in(alice).get("/dashboard/?range=24h").content.decode()
    rows = cells(html, "Tasks per status, per hour")[1:]
    assert sum(int(r[1]) for r in rows) == 2 and sum(int(r[-1]) for r in rows) == 3
    tokens = cells(html, "Tokens per hour per agent")[1:]
    assert sum(int(r[1]) for r in tokens) == 45


def test_it_counts_tool_calls_and_errors(alice):
    agent = seed(alice.org, "Scout", ["completed"], [1.0], timedelta(hours=1))
    task = Task.objects.get(agent=agent)
    for i, (tool, error) in enumerate([("search", False), ("search", True), ("add", False)]):
        ActivityEntry.objects.create(
            task=task, position=i + 1, kind="tool_call", data={"tool_name": tool, "is_error": error}
        )
    html = signed_in(alice).get("/dashboard/").content.decode()
    assert cells(html, "Tool usage")[1:] == [["search", "2", "1"], ["add", "1", "0"]]


def test_it_leaves_out_tasks_before_the_range(alice):
    seed(alice.org, "Old", ["completed"], [1.0], timedelta(days=10))
    html = signed_in(alice).get("/dashboard/?range=7d").content.decode()
    assert "0 tasks" in html and "Old" not in html.split("Failure rate per agent", 1)[1]
    # The range reads with both its dates: a week back, to today (not only today's time).
    from django.utils import timezone

    today = timezone.localtime().strftime("%Y-%m-%d")
    assert re.search(
        rf"tasks from <time[^>]*>\d{{4}}-\d\d-\d\d \d\d:\d\d</time> to <time[^>]*>{today} ", html
    )
    assert "Old" in signed_in(alice).get("/dashboard/?range=30d").content.decode()


def test_it_lists_running_tasks_and_refreshes_them_alone(alice):
    seed(alice.org, "Scout", ["executing", "completed"], [None, 1.0], timedelta(minutes=5))
    client = signed_in(alice)
    part = client.get("/dashboard/?partial=running").content.decode()
    assert (
        part.strip().startswith('<section id="running"')
        and "Scout task 0" in part
        and "Scout task 1" not in part
    )


def test_it_refuses_a_range_it_cannot_draw(alice):
    client = signed_in(alice)
    r = client.get("/dashboard/?range=90d&bucket=hour")
    assert r.status_code == 400 and 'id="id_bucket_error"' in r.content.decode()
    assert client.get("/dashboard/?range=forever").status_code == 400


def test_viewers_see_it(vera):
    assert signed_in(vera).get("/dashboard/").status_code == 200


def test_charlie_from_another_org_sees_none_of_alices_numbers(alice, charlie):
    seed(alice.org, "Scout", ["executing", "failed"], [None, 3.0], timedelta(minutes=5))
    client = signed_in(charlie)
    html = client.get("/dashboard/").content.decode()
    assert "Scout" not in html and "0 tasks" in html
    assert "Scout" not in client.get("/dashboard/?partial=running").content.decode()


def test_it_reuses_the_figures_for_a_short_while_but_not_the_running_list(alice, settings):
    settings.CONSOLE_DASHBOARD_CACHE_SECONDS = 30
    seed(alice.org, "Scout", ["completed"], [1.0], timedelta(hours=1))
    client = signed_in(alice)
    assert "1 tasks" in client.get("/dashboard/").content.decode()
    seed(alice.org, "Clerk", ["executing"], [None], timedelta(minutes=1))
    html = client.get("/dashboard/").content.decode()
    assert "1 tasks" in html and "refreshed every 30 s" in html
    assert "Clerk task 0" in html  # running now is always read fresh
    settings.CONSOLE_DASHBOARD_CACHE_SECONDS = 0
    assert "2 tasks" in client.get("/dashboard/").content.decode()

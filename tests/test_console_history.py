"""/tasks/: the team's history with its filters, text search, sorting, keyset pages, counts, bulk stop."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from console.access import actor_for_key, actor_for_membership
from console.models import Agent, Framework
from tasks_app import actions
from tasks_app.models import Task
from tasks_app.schemas import TaskCreateIn, TaskUpdateIn
from tests.console_helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def agent(org, name: str) -> Agent:
    return Agent.objects.create(
        organization=org, name=name, unique_name=name.lower(), framework=Framework.EXTERNAL
    )


def make(
    persona,
    agent_: Agent,
    text: str,
    *,
    title: str = "",
    status: str = "",
    result: str | None = None,
    user: dict | None = None,
    internal: str | None = None,
) -> Task:
    # Naming an end user takes a service key (an owner's), as over REST; otherwise the member acts.
    actor = actor_for_key(persona.key) if user else actor_for_membership(persona.member)
    body = {"input": {"text": text, "user": user}, "title": title or None}
    task = actions.create_task(actor, agent_.id, TaskCreateIn.model_validate(body))
    fields, update = set(), {}
    if result is not None:
        fields.add("result")
        update["result"] = result
    if status:
        fields.add("status")
        update["status"] = status
    if internal:
        fields.add("internal_status")
        update["internal_status"] = internal
    if fields:
        task = actions.update_task(actor, task.id, TaskUpdateIn(**update), fields=fields, full_dump=False)
    return task


def ids(response) -> list[str]:
    return [t.id for t in response.context["page"].rows]


@pytest.fixture
def world(alice, bob, charlie):
    writer, reviewer = agent(alice.org, "Writer"), agent(alice.org, "Reviewer")
    t = {
        "report": make(
            alice,
            writer,
            "Write the quarterly REPORT",
            title="Q3",
            status="completed",
            result="Revenue was 42 million",
            user={"id": "u-7", "email": "eve@customer.test"},
        ),
        "draft": make(bob, writer, "draft a letter to Zoë", status="executing", internal="awaiting review"),
        "review": make(alice, reviewer, "review the report", status="failed", result="50% done_ok"),
        "pending": make(bob, reviewer, "École des données"),
    }
    t["other"] = make(charlie, agent(charlie.org, "Theirs"), "Write the quarterly report elsewhere")
    return writer, reviewer, t


def test_it_lists_only_the_organizations_tasks_newest_first(alice, world):
    _, _, t = world
    r = signed_in(alice).get("/tasks/")
    assert r.status_code == 200
    assert ids(r) == [t["pending"].id, t["review"].id, t["draft"].id, t["report"].id]
    assert t["other"].id not in r.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=report", ["review", "report"]),  # prompt, case-insensitive
        ("q=REPORT+quarterly", ["report"]),  # every word must occur
        ("q=quarterly+nowhere", []),
        ("q=revenue", ["report"]),  # result
        ("q=q3", ["report"]),  # title
        ("q=LETTER+zoë", ["draft"]),  # ASCII and non-ASCII words in text with both
        ("q=ZOË", ["draft"]),  # non-ASCII, folded
        ("q=école", ["pending"]),  # the prompt says École
        ("q=50%25", ["review"]),  # % is a character, not a wildcard
        ("q=%25", ["review"]),
        ("q=done_ok", ["review"]),
        ("q=w_i", []),  # _ is a character, not a wildcard (else it finds "Write")
    ],
)
def test_text_search_means_every_word_as_a_case_insensitive_substring(alice, world, query, expected):
    _, _, t = world
    r = signed_in(alice).get(f"/tasks/?{query}")
    assert ids(r) == [t[name].id for name in ["pending", "review", "draft", "report"] if name in expected]


def test_it_filters_by_agent_status_internal_status_user_and_creator(alice, world):
    writer, reviewer, t = world
    client = signed_in(alice)
    assert ids(client.get(f"/tasks/?agent={reviewer.id}")) == [t["pending"].id, t["review"].id]
    assert ids(client.get("/tasks/?status=completed&status=failed")) == [t["review"].id, t["report"].id]
    assert ids(client.get("/tasks/?status=completed,failed")) == [t["review"].id, t["report"].id]
    assert ids(client.get("/tasks/?internal_status=awaiting+review")) == [t["draft"].id]
    assert ids(client.get("/tasks/?user=u-7")) == [t["report"].id]
    assert ids(client.get("/tasks/?user=EVE@customer.test")) == [t["report"].id]
    assert ids(client.get("/tasks/?created_by=bob@example.com")) == [t["pending"].id, t["draft"].id]
    combined = client.get(f"/tasks/?agent={writer.id}&status=completed&q=report")
    assert ids(combined) == [t["report"].id]


def test_it_filters_by_dates(alice, world):
    _, _, t = world
    Task.objects.filter(pk=t["report"].id).update(created_at=timezone.now() - timedelta(days=10))
    client = signed_in(alice)
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert t["report"].id not in ids(client.get(f"/tasks/?from={since}"))
    until = (timezone.now() - timedelta(days=5)).date().isoformat()
    assert ids(client.get(f"/tasks/?to={until}")) == [t["report"].id]


def test_it_says_what_is_wrong_with_a_filter_next_to_it(alice, world):
    r = signed_in(alice).get("/tasks/?status=bogus&from=yesterday")
    assert r.status_code == 400
    html = r.content.decode()
    assert 'id="id_status_error"' in html and "bogus is not one of the available choices" in html
    assert 'id="id_from_error"' in html and "Enter a valid date." in html


def test_another_organizations_agent_is_not_a_valid_filter(alice, charlie, world):
    theirs = Agent.objects.get(organization=charlie.org)
    r = signed_in(alice).get(f"/tasks/?agent={theirs.id}")
    assert r.status_code == 400


def test_counts_per_status_follow_the_other_filters(alice, world):
    writer, _, _ = world
    r = signed_in(alice).get(f"/tasks/?agent={writer.id}&status=completed")
    counts = r.context["counts"]
    assert counts["completed"] == 1 and counts["executing"] == 1 and counts["failed"] == 0


def test_keyset_pages_walk_the_whole_history_once_and_keep_the_filters(alice, world, settings):
    settings.CONSOLE_PAGE_SIZE = 2
    writer, _, _ = world
    for i in range(3):
        make(alice, writer, f"extra {i}")
    client = signed_in(alice)
    seen, url = [], f"/tasks/?agent={writer.id}"
    while url:
        r = client.get(url)
        seen += ids(r)
        page = r.context["page"]
        url = f"/tasks/?{r.context['filters_qs']}&after={page.next_cursor}" if page.next_cursor else ""
    expected = list(
        Task.objects.filter(agent=writer).order_by("-created_at", "-id").values_list("id", flat=True)
    )
    assert seen == expected and len(seen) == 5
    # and back again
    r = client.get(
        f"/tasks/?agent={writer.id}&after={client.get(f'/tasks/?agent={writer.id}').context['page'].next_cursor}"
    )
    back = client.get(f"/tasks/?agent={writer.id}&before={r.context['page'].prev_cursor}")
    assert ids(back) == expected[:2]


def test_it_sorts_oldest_first_and_by_last_update(alice, world):
    _, _, t = world
    client = signed_in(alice)
    assert ids(client.get("/tasks/?sort=oldest")) == [
        t["report"].id,
        t["draft"].id,
        t["review"].id,
        t["pending"].id,
    ]
    Task.objects.filter(pk=t["draft"].id).update(updated_at=timezone.now() + timedelta(minutes=1))
    assert ids(client.get("/tasks/?sort=updated"))[0] == t["draft"].id


def test_a_damaged_page_link_goes_back_to_the_first_page_with_a_message(alice, world):
    client = signed_in(alice)
    r = client.get("/tasks/?status=failed&after=not-a-cursor")
    assert r.status_code == 302 and r["Location"] == "/tasks/?status=failed"
    assert "damaged" in client.get(r["Location"]).content.decode()


def test_a_member_stops_the_selected_running_tasks(bob, world, charlie):
    _, _, t = world
    client = signed_in(bob)
    r = client.post(
        "/tasks/stop/",
        {"task": [t["draft"].id, t["pending"].id, t["report"].id, t["other"].id], "next": "/tasks/?q=x"},
    )
    assert r.status_code == 302 and r["Location"] == "/tasks/?q=x"
    statuses = dict(Task.objects.values_list("id", "status"))
    assert statuses[t["draft"].id] == statuses[t["pending"].id] == "stopped"
    assert statuses[t["report"].id] == "completed"
    assert statuses[t["other"].id] == "pending"  # charlie's task is not touched
    message = client.get("/tasks/").content.decode()
    assert "Stop requested for 2 tasks. 1 had already finished." in message


def test_a_viewer_reads_the_history_but_may_not_stop(vera, world):
    _, _, t = world
    client = signed_in(vera)
    page = client.get("/tasks/").content.decode()
    assert t["draft"].id in page and "Stop selected" not in page
    assert client.post("/tasks/stop/", {"task": [t["draft"].id]}).status_code == 403
    assert Task.objects.get(pk=t["draft"].id).status == "executing"


def test_the_live_list_refresh_returns_only_the_results(alice, world):
    r = signed_in(alice).get("/tasks/?status=completed&partial=rows")
    html = r.content.decode()
    assert html.lstrip().startswith('<section id="results"') and "<html" not in html

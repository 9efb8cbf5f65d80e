"""GET /api/agent-execution/executions/history/{agent_id} and .../history/user/{user_id}: Tasks.list."""

from __future__ import annotations

from tasks_app import actions
from tasks_app.actions import SYSTEM, Actor
from tasks_app.models import Task
from tasks_app.schemas import TaskCreateIn


def user(uid: str) -> dict:
    return {"id": uid, "email": f"{uid}@example.com"}


def history(persona, agent_id: str, query: str = ""):
    return persona.get(f"/api/agent-execution/executions/history/{agent_id}{query}")


def user_history(persona, user_id: str, query: str = ""):
    return persona.get(f"/api/agent-execution/executions/history/user/{user_id}{query}")


def finish(persona, task_id: str, status: str = "completed") -> None:
    r = persona.patch(f"/api/agent-execution/{task_id}/update", {"status": status, "result": "R"})
    assert r.status_code == 200


def test_it_lists_an_agents_tasks_newest_first_as_a_bare_array(alice, task_of, external_agent):
    first = task_of("one", input={"text": "one", "files": [], "user": user("u1")}, title="First")
    second = task_of("two")
    r = history(alice, external_agent.id)
    assert r.status_code == 200
    assert r["Content-Type"].startswith("application/json")
    items = r.json()
    assert isinstance(items, list)
    assert [t["id"] for t in items] == [second["id"], first["id"]]
    assert items[1] == {
        "id": first["id"],
        "agent_id": external_agent.id,
        "organization_id": alice.org.id,
        "status": "pending",
        "internal_status": None,
        "user_id": "u1",
        "parent_task_id": None,
        "triggering_agent_id": None,
        "created_at": first["created_at"],
        "updated_at": items[1]["updated_at"],
        "result": None,
        "title": "First",
        "source_node_type": None,
    }


def test_it_lists_only_that_agents_tasks(alice, task_of):
    task_of()
    other = alice.post("/api/v1/agents", {"name": "Other", "framework": "external"}).json()
    r = history(alice, other["id"])
    assert r.status_code == 200
    assert r.json() == []


def test_it_filters_by_status(alice, task_of, external_agent):
    done, failed, pending = task_of("a"), task_of("b"), task_of("c")
    finish(alice, done["id"])
    finish(alice, failed["id"], "failed")
    assert [t["id"] for t in history(alice, external_agent.id, "?status=completed").json()] == [done["id"]]
    both = history(alice, external_agent.id, "?status=completed,failed").json()
    assert {t["id"] for t in both} == {done["id"], failed["id"]}
    # the SDK sends a str-Enum filter as str(value)
    r = history(alice, external_agent.id, "?status=AgentExecutionStatus.Pending")
    assert [t["id"] for t in r.json()] == [pending["id"]]


def test_it_rejects_an_unknown_status_filter(alice, external_agent):
    r = history(alice, external_agent.id, "?status=running")
    assert r.status_code == 422
    assert r.json()["field"] == "status"
    assert "running" in r.json()["detail"]


def test_it_filters_by_user_and_internal_status(alice, task_of, external_agent):
    mine = task_of("a", input={"text": "a", "files": [], "user": user("u1")})
    theirs = task_of("b", input={"text": "b", "files": [], "user": user("u2")})
    alice.patch(f"/api/agent-execution/{mine['id']}/update", {"internal_status": "review"})
    alice.patch(f"/api/agent-execution/{theirs['id']}/update", {"internal_status": "review"})
    r = history(alice, external_agent.id, "?user_id=u1&internal_status=review")
    assert [t["id"] for t in r.json()] == [mine["id"]]
    assert history(alice, external_agent.id, "?internal_status=nope").json() == []


def test_empty_filters_are_ignored(alice, task_of, external_agent):
    task = task_of()
    # the SDK sends None as an empty value, keeping the key
    r = history(alice, external_agent.id, "?user_id=&status=&internal_status=&parent_task_id=")
    assert [t["id"] for t in r.json()] == [task["id"]]


def test_it_filters_by_parent_and_triggering_agent(alice, task_of, external_agent):
    parent = task_of("parent")
    child = actions.create_task(
        Actor(alice.org.id, SYSTEM),
        external_agent.id,
        TaskCreateIn(input={"text": "child"}),
        parent=Task.objects.get(pk=parent["id"]),
    )
    r = history(alice, external_agent.id, f"?parent_task_id={parent['id']}")
    assert [t["id"] for t in r.json()] == [child.id]
    assert r.json()[0]["parent_task_id"] == parent["id"]
    r = history(alice, external_agent.id, f"?triggering_agent_id={external_agent.id}")
    assert [t["id"] for t in r.json()] == [child.id]


def test_it_limits_the_number_of_items(alice, task_of, external_agent):
    ids = [task_of(str(i))["id"] for i in range(3)]
    r = history(alice, external_agent.id, "?limit=2")
    assert [t["id"] for t in r.json()] == ids[:0:-1]
    for bad in ("0", "1001", "many"):
        r = history(alice, external_agent.id, f"?limit={bad}")
        assert r.status_code == 422
        assert r.json()["field"] == "limit"


def test_it_lists_a_users_tasks_across_agents(alice, task_of):
    other = alice.post("/api/v1/agents", {"name": "Other", "framework": "external"}).json()
    first = task_of("a", input={"text": "a", "files": [], "user": user("u1")})
    task_of("b", input={"text": "b", "files": [], "user": user("u2")})
    r = alice.post(
        f"/api/agent-execution/{other['id']}",
        {"input": {"text": "c", "files": [], "user": user("u1")}},
    )
    second = r.json()
    finish(alice, second["id"])
    r = user_history(alice, "u1")
    assert r.status_code == 200
    assert [t["id"] for t in r.json()] == [second["id"], first["id"]]
    assert [t["id"] for t in user_history(alice, "u1", "?status=pending").json()] == [first["id"]]
    assert user_history(alice, "nobody").json() == []


def test_it_rejects_unknown_agents(alice):
    r = history(alice, "no-such-agent")
    assert r.status_code == 404
    assert r.json()["detail"] == "Agent no-such-agent not found"


def test_a_viewer_can_list(vera, task_of, external_agent):
    task = task_of()
    r = history(vera, external_agent.id)
    assert r.status_code == 200
    assert [t["id"] for t in r.json()] == [task["id"]]


def test_it_requires_an_api_key(alice, external_agent):
    r = alice.client.get(f"/api/agent-execution/executions/history/{external_agent.id}")
    assert r.status_code == 401

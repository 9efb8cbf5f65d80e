"""The runtime's writes are fenced by its lease, and model keys go only where they belong."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.models import Agent
from tasks_app import actions
from tasks_app.models import Task, TaskEvent
from tasks_app.runtime import llm
from tests.conftest import create_body


@pytest.fixture
def builtin_agent(alice) -> Agent:
    r = alice.post(
        "/api/v1/agents",
        {
            "name": "Runner",
            "framework": "builtin",
            "model_provider": "openai",
            "model_name": "gpt-4o-mini",
            "model_base_url": "https://llm.example.com/v1",
        },
    )
    assert r.status_code == 201, r.content
    return Agent.objects.get(pk=r.json()["id"])


def test_a_run_that_lost_its_task_writes_nothing(alice, builtin_agent):
    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    assert actions.claim_task(task["id"], "w1", 30) is not None
    assert actions.record_progress(task["id"], events=[("chunk", "a")], worker_id="w1")
    actions.force_stop(task["id"], "Stopped by request")
    before = TaskEvent.objects.filter(task_id=task["id"]).count()
    assert actions.record_progress(task["id"], events=[("chunk", "late")], worker_id="w1") == []
    assert actions.finish_task(task["id"], "completed", "late", worker_id="w1") is None
    assert TaskEvent.objects.filter(task_id=task["id"]).count() == before
    assert Task.objects.get(pk=task["id"]).status == "stopped"


def test_a_claimed_task_is_handed_to_its_run_with_its_agent(alice, builtin_agent, django_assert_num_queries):
    """The run starts from the claim's read (runner._load): the task and its agent, current as claimed."""
    from tasks_app.runtime import runner

    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    claimed = actions.claim_task(task["id"], "w1", 30)
    with django_assert_num_queries(0):
        assert (claimed.status, claimed.lease_owner, claimed.agent.name) == ("executing", "w1", "Runner")
    stored = Task.objects.get(pk=task["id"])
    assert (claimed.last_seq, claimed.attempts) == (stored.last_seq, stored.attempts) == (2, 1)
    with django_assert_num_queries(
        1
    ):  # its graph items (no MCP server: no vault read), not the task or agent
        loaded, agent, *_ = runner._load(task["id"], claimed)
    assert loaded is claimed and agent is claimed.agent


def test_another_workers_writes_are_dropped(alice, builtin_agent):
    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    actions.claim_task(task["id"], "w1", 30)
    assert actions.record_progress(task["id"], events=[("chunk", "x")], worker_id="w2") == []


def test_a_run_that_completes_despite_a_stop_is_not_manually_stopped(alice, builtin_agent):
    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    actions.claim_task(task["id"], "w1", 30)
    actor = actions.Actor(alice.org.id, "owner")
    assert actions.stop_task(actor, task["id"]).status == "executing"  # the worker is asked to cancel
    finished = actions.finish_task(task["id"], "completed", "done", worker_id="w1")  # but finishes first
    assert finished.status == "completed" and finished.is_manually_stopped is False


def test_the_operators_key_never_goes_to_an_admins_url(monkeypatch, builtin_agent):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-operator")
    task = Task(agent=builtin_agent, organization=builtin_agent.organization)
    with pytest.raises(llm.ModelConfigError, match="only sent to the provider's own endpoint"):
        llm.resolve(task, builtin_agent)
    builtin_agent.model_base_url = ""
    assert llm.resolve(task, builtin_agent)[3] == "sk-operator"


def test_the_server_drives_builtin_status(alice, builtin_agent):
    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    r = alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "executing"})
    assert r.status_code == 409
    r = alice.patch(f"/api/agent-execution/{task['id']}/update", {"status": "stopped"})
    assert (
        r.status_code == 200 and r.json()["status"] == "stopped" and r.json()["is_manually_stopped"] is True
    )


def test_a_create_counts_its_first_entry_and_event_in_its_insert(alice, builtin_agent):
    """No UPDATE of the new row: last_seq and last_activity go in with the INSERT, and the
    task_created snapshot and the response ask no sub-task query (a new task has none)."""

    with CaptureQueriesContext(connection) as ctx:
        task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not [s for s in sql if s.startswith('UPDATE "tasks_app_task"')], sql
    assert not [s for s in sql if '"parent_id" =' in s], sql  # the sub-task lookup
    assert task["sub_executions"] == []
    stored = Task.objects.get(pk=task["id"])
    assert (stored.last_seq, stored.last_activity) == (1, 1)
    assert list(TaskEvent.objects.filter(task_id=task["id"]).values_list("seq", "type")) == [
        (1, "task_created")
    ]
    assert list(stored.activity.values_list("position", flat=True)) == [1]


def test_only_a_first_claim_skips_the_sub_task_lookup(alice, builtin_agent, external_agent):
    """A task's sub-tasks are made during its runs: a first claim knows there are none; a later one
    (a follow-up turn) and every finish still list them in their snapshots."""
    from console.access import SYSTEM, Actor
    from tasks_app.schemas import TaskCreateIn

    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    with CaptureQueriesContext(connection) as ctx:
        claimed = actions.claim_task(task["id"], "w1", 30)
    assert not [q for q in ctx.captured_queries if '"parent_id" =' in q["sql"]]
    assert TaskEvent.objects.get(task_id=task["id"], seq=2).data["sub_executions"] == []
    child = actions.create_task(
        Actor(alice.org.id, SYSTEM), external_agent.id, TaskCreateIn(input={"text": "sub"}), parent=claimed
    )
    assert claimed.sub_execution_ids() == [child.id]  # the run's copy asks again once claimed
    done = actions.finish_task(task["id"], "completed", "ok", worker_id="w1")
    assert done.sub_execution_ids() == [child.id]
    finished = TaskEvent.objects.get(task_id=task["id"], type="task_finished")
    assert finished.data["sub_executions"] == [child.id]
    again = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("more", id=task["id"])).json()
    assert again["sub_executions"] == [child.id]  # a follow-up turn's response
    actions.claim_task(task["id"], "w2", 30)
    claimed_again = TaskEvent.objects.filter(task_id=task["id"], type="task_updated").order_by("-seq").first()
    assert claimed_again.data["status"] == "executing"
    assert claimed_again.data["sub_executions"] == [child.id]


def test_a_finish_told_there_are_no_sub_tasks_asks_no_sub_task_query(alice, builtin_agent):
    """The runtime's finish of a first run with no sub-agent in its graph: its final snapshots list
    no sub-tasks without asking; the same finish without the hint asks."""
    told, untold = (
        alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json() for _ in "ab"
    )
    for task in (told, untold):
        actions.claim_task(task["id"], "w1", 30)
    with CaptureQueriesContext(connection) as ctx:
        actions.finish_task(told["id"], "completed", "ok", worker_id="w1", no_sub_tasks=True)
    assert not [q for q in ctx.captured_queries if '"parent_id" =' in q["sql"]]
    assert TaskEvent.objects.get(task_id=told["id"], type="task_finished").data["sub_executions"] == []
    with CaptureQueriesContext(connection) as ctx:
        actions.finish_task(untold["id"], "completed", "ok", worker_id="w1")
    assert [q for q in ctx.captured_queries if '"parent_id" =' in q["sql"]]


def test_the_runtime_tells_a_finish_there_are_no_sub_tasks_only_when_none_can_exist(alice, builtin_agent):
    """Only the first attempt of a first turn whose graph offers no sub-agent: a follow-up turn, a
    re-claimed task (a requeue, a resume after sign-in) or a graph with an agent may have some."""
    from console.models import GraphItem
    from tasks_app.runtime.runner import _made_no_sub_tasks

    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    run = actions.claim_task(task["id"], "w1", 30)
    mcp = GraphItem(agent=builtin_agent, key="gi-mcp", type="mcp", name="Tools")
    sub_agent = GraphItem(agent=builtin_agent, key="gi-agent", type="agent", name="Helper")
    assert (run.turns, run.attempts) == (1, 1)
    assert _made_no_sub_tasks(run, []) and _made_no_sub_tasks(run, [mcp])
    assert not _made_no_sub_tasks(run, [mcp, sub_agent])
    run.attempts = 2
    assert not _made_no_sub_tasks(run, [mcp])
    run.attempts, run.turns = 1, 2
    assert not _made_no_sub_tasks(run, [mcp])


def test_a_finish_stores_the_runs_last_events_with_its_own_in_one_insert(alice, builtin_agent):
    """The run's last chunk and the final task_updated and task_finished: one INSERT, in seq order."""
    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    actions.claim_task(task["id"], "w1", 30)
    with CaptureQueriesContext(connection) as ctx:
        actions.finish_task(
            task["id"], "completed", "ok", worker_id="w1", events=[("chunk", "the end")], secrets=[]
        )
    inserts = [q for q in ctx.captured_queries if q["sql"].startswith('INSERT INTO "tasks_app_taskevent"')]
    assert len(inserts) == 1
    stored = list(TaskEvent.objects.filter(task_id=task["id"]).order_by("seq").values_list("seq", "type"))
    assert stored[-3:] == [(3, "chunk"), (4, "task_updated"), (5, "task_finished")]
    assert Task.objects.get(pk=task["id"]).last_seq == 5


def _events(task_id: str) -> list[tuple[int, str]]:
    return list(TaskEvent.objects.filter(task_id=task_id).order_by("seq").values_list("seq", "type"))


def test_a_task_is_claimed_once_and_a_task_not_pending_not_at_all(alice, builtin_agent):
    """A claim of a claimed, stop-requested, finished or unknown task claims nothing and writes nothing."""
    from django.utils import timezone

    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    first = actions.claim_task(task["id"], "w1", 30)
    assert (first.status, first.lease_owner, first.attempts, first.last_seq) == ("executing", "w1", 1, 2)
    assert first.agent.pk == builtin_agent.pk
    row, events = Task.objects.values().get(pk=task["id"]), _events(task["id"])
    assert events == [(1, "task_created"), (2, "task_updated")]
    assert actions.claim_task(task["id"], "w2", 30) is None
    assert (Task.objects.values().get(pk=task["id"]), _events(task["id"])) == (row, events)

    asked = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("stop me")).json()
    Task.objects.filter(pk=asked["id"]).update(stop_requested_at=timezone.now())
    row = Task.objects.values().get(pk=asked["id"])
    assert actions.claim_task(asked["id"], "w1", 30) is None
    assert (Task.objects.values().get(pk=asked["id"]), _events(asked["id"])) == (row, [(1, "task_created")])

    actions.finish_task(task["id"], "completed", "ok", worker_id="w1")
    row, events = Task.objects.values().get(pk=task["id"]), _events(task["id"])
    assert actions.claim_task(task["id"], "w1", 30) is None
    assert (Task.objects.values().get(pk=task["id"]), _events(task["id"])) == (row, events)
    assert actions.claim_task("no-such-task", "w1", 30) is None


@pytest.mark.django_db(transaction=True)
def test_two_claims_at_once_claim_the_task_once(alice, builtin_agent):
    """Two workers claim one task at the same moment (the broker delivered it twice): one run gets it,
    its claim event is written once, and the other claim returns None."""
    import threading

    from django.db import connections

    task = alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body("go")).json()
    start = threading.Barrier(2)
    got: dict[str, Task | None] = {}

    def claim(worker: str) -> None:
        try:
            start.wait()
            got[worker] = actions.claim_task(task["id"], worker, 30)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(w,)) for w in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [w for w, claimed in got.items() if claimed is not None]
    assert len(got) == 2 and len(winners) == 1
    row = Task.objects.get(pk=task["id"])
    assert (row.status, row.lease_owner, row.attempts, row.last_seq) == ("executing", winners[0], 1, 2)
    assert _events(task["id"]) == [(1, "task_created"), (2, "task_updated")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'")  # SQLite has one writer at a time: no such race
def test_a_claim_of_a_task_another_transaction_holds_running_does_not_wait_for_it(alice, builtin_agent):
    """Two processes' group commits, each holding its own running task's row, each claim the other's
    task (a stale dispatch hint): both claims find nothing to claim. A claim that locked the row
    before checking it waited for the other's commit, and the two deadlocked."""
    import threading

    from django.db import connections, transaction

    x, y = (alice.post(f"/api/agent-execution/{builtin_agent.id}", create_body(t)).json()["id"] for t in "xy")
    assert actions.claim_task(x, "A", 30) and actions.claim_task(y, "B", 30)
    both_hold = threading.Barrier(2)
    out: dict[str, object] = {}

    def group(worker: str, mine: str, theirs: str) -> None:
        try:
            with transaction.atomic():  # as the group writer's transaction
                assert actions.record_progress(
                    mine, events=[("chunk", "a")], worker_id=worker
                )  # locks `mine`
                both_hold.wait(10)
                out[worker] = actions.claim_task(theirs, f"{worker}2", 30)
        except Exception as exc:  # the deadlock's victim
            out[worker] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=group, args=a) for a in (("A", x, y), ("B", y, x))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert out == {"A": None, "B": None}
    assert {t.pk: t.lease_owner for t in Task.objects.filter(pk__in=[x, y])} == {x: "A", y: "B"}

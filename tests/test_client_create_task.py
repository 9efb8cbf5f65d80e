"""Tasks().create / acreate, get / aget, list / alist, and follow-up turns through the client."""

from __future__ import annotations

import pytest

from tasks_app.client import AgentExecutionStatus, Task, Tasks, TasksListItem, User
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def test_it_creates_from_the_environment(setup, monkeypatch):
    setup.use_environment(monkeypatch)
    task = Tasks().create(
        agent_id=setup.agent["id"],
        prompt="Analyze the sales data",
        file_urls=["https://example.com/sales_data.csv"],
        user_details=User(id="u-1", email="u1@example.com", first_name="Uma"),
        events_streaming=True,
        title="Sales",
    )
    assert isinstance(task, Task)
    assert task.status == AgentExecutionStatus.Pending
    assert task.agent_id == setup.agent["id"]
    assert task.organization_id == setup.account.organization_id
    assert task.input.text == "Analyze the sales data"
    assert task.input.files == ["https://example.com/sales_data.csv"]
    assert task.input.user == User(id="u-1", email="u1@example.com", first_name="Uma")
    assert task.events_streaming is True
    assert task.title == "Sales"
    assert setup.raw(task)["input"]["text"] == "Analyze the sales data"


async def test_it_creates_asynchronously(setup):
    tasks = Tasks(setup.configuration)
    task = await tasks.acreate(agent_id=setup.agent["id"], prompt="async hello")
    assert task.status == "pending"
    assert task.events_streaming is False
    again = await tasks.aget(task.id)
    assert again.id == task.id and again.input.text == "async hello"
    loaded = await Task.aload(task.id, setup.configuration)
    assert loaded.created_at == task.created_at


def test_get_load_and_list(setup):
    tasks = Tasks(setup.configuration)
    first = tasks.create(
        setup.agent["id"], prompt="one", user_details={"id": "lister", "email": "l@example.com"}
    )
    second = tasks.create(setup.agent["id"], prompt="two")
    setup.finish(second, "R2")
    assert tasks.get(first.id).input.text == "one"
    assert Task.load(second.id, setup.configuration).result == "R2"

    items = tasks.list(setup.agent["id"])
    assert [i.id for i in items] == [second.id, first.id]
    assert all(isinstance(i, TasksListItem) for i in items)
    done = tasks.list(setup.agent["id"], filters={"status": AgentExecutionStatus.Completed})
    assert [i.id for i in done] == [second.id]
    assert done[0].load().result == "R2"
    mine = tasks.list_user_tasks("lister")
    assert [i.id for i in mine] == [first.id]


async def test_alist_and_aload_from_a_list_item(setup):
    tasks = Tasks(setup.configuration)
    task = await tasks.acreate(setup.agent["id"], prompt="listed")
    [item] = await tasks.alist(setup.agent["id"], filters={"status": "pending"})
    assert item.id == task.id
    assert (await item.aload()).input.text == "listed"


def test_a_follow_up_continues_the_same_task(setup):
    tasks = Tasks(setup.configuration)
    task = tasks.create(setup.agent["id"], prompt="first turn")
    setup.finish(task, "first answer")
    again = tasks.create(setup.agent["id"], existing_task_id=task.id, prompt="second turn")
    assert again.id == task.id
    assert again.status == "pending"
    assert again.input.text == "second turn"
    assert again.turns == 2

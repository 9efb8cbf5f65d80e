"""Following a task's status through the client as its worker moves it along."""

from __future__ import annotations

import pytest

from tasks_app.client import AgentExecutionStatus, Tasks
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def test_it_follows_pending_executing_completed(setup):
    tasks = Tasks(setup.configuration)
    task = tasks.create(setup.agent["id"], prompt="work")
    assert task.status == AgentExecutionStatus.Pending and task.started_at is None

    setup.set_status(task, "executing")
    task.reload()
    assert task.status == AgentExecutionStatus.Executing
    assert task.started_at is not None and task.finished_at is None

    setup.finish(task, "all done")
    task.reload()
    assert task.status == AgentExecutionStatus.Completed
    assert task.result == "all done"
    assert task.finished_at is not None and task.duration is not None
    assert tasks.get(task.id).status == "completed"


async def test_areload_returns_the_task(setup):
    task = await Tasks(setup.configuration).acreate(setup.agent["id"], prompt="work")
    setup.set_status(task, "failed", "it broke")
    assert await task.areload() is task
    assert task.status == AgentExecutionStatus.Failed
    assert task.result == "it broke"


def test_status_filters_see_the_change(setup):
    tasks = Tasks(setup.configuration)
    task = tasks.create(setup.agent["id"], prompt="filtered")
    assert [i.id for i in tasks.list(setup.agent["id"], {"status": "executing"})] == []
    setup.set_status(task, "executing")
    assert [i.id for i in tasks.list(setup.agent["id"], {"status": "executing"})] == [task.id]

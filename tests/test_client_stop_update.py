"""Stopping and updating tasks through the client."""

from __future__ import annotations

import pytest

from tasks_app.client import AgentExecutionStatus, ModuleException, Tasks
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def test_tasks_stop_and_task_stop(setup):
    tasks = Tasks(setup.configuration)
    first = tasks.create(setup.agent["id"], prompt="stop me")
    stopped = tasks.stop(first.id)
    assert stopped.status == AgentExecutionStatus.Stopped
    assert stopped.is_manually_stopped is True

    second = tasks.create(setup.agent["id"], prompt="and me")
    assert second.stop() is second
    assert second.status == AgentExecutionStatus.Stopped
    assert setup.raw(second)["status"] == "stopped"


async def test_astop_and_a_second_stop_is_a_conflict(setup):
    tasks = Tasks(setup.configuration)
    task = await tasks.acreate(setup.agent["id"], prompt="stop me")
    await task.astop()
    assert task.status == "stopped"
    with pytest.raises(ModuleException) as caught:
        await tasks.astop(task.id)
    assert caught.value.status_code == 409
    assert caught.value.description == f"Task {task.id} is already stopped"


def test_update_sets_status_and_result(setup):
    tasks = Tasks(setup.configuration)
    task = tasks.create(setup.agent["id"], prompt="update me")
    running = tasks.update(task.id, status=AgentExecutionStatus.Executing, source="cli")
    assert running.status == "executing" and running.source == "cli"
    done = tasks.update(task.id, status=AgentExecutionStatus.Completed, result="R")
    assert done.status == "completed" and done.result == "R"
    with pytest.raises(ModuleException) as caught:
        tasks.update(task.id, status="failed")
    assert caught.value.status_code == 409
    assert "already completed" in caught.value.description


async def test_aupdate_and_set_status(setup):
    tasks = Tasks(setup.configuration)
    task = await tasks.acreate(setup.agent["id"], prompt="update me")
    updated = await tasks.aupdate(task.id, result="partial")
    assert updated.result == "partial" and updated.status == "pending"
    await task.aset_status(AgentExecutionStatus.Completed, result="final")
    assert task.status == "completed" and task.result == "final"
    assert setup.raw(task)["result"] == "final"

"""task.internal_status with save()/asave(): stored, echoed, filterable, at most 255 characters."""

from __future__ import annotations

import pytest

from tasks_app.client import Configuration, ModuleException, Task, Tasks
from tests.test_client_support import make_setup

pytestmark = pytest.mark.live


@pytest.fixture
def setup(daphne_server):
    return make_setup(daphne_server)


def test_save_stores_the_internal_status(setup):
    tasks = Tasks(setup.configuration)
    task = tasks.create(setup.agent["id"], prompt="review me")
    task.internal_status = "awaiting review"
    assert task.save() is task
    assert task.internal_status == "awaiting review"
    assert setup.raw(task)["internal_status"] == "awaiting review"
    assert [i.id for i in tasks.list(setup.agent["id"], {"internal_status": "awaiting review"})] == [task.id]


async def test_asave_on_a_finished_task_keeps_its_final_status(setup):
    task = await Tasks(setup.configuration).acreate(setup.agent["id"], prompt="done soon")
    setup.finish(task, "answer")
    task.internal_status = "sent to customer"  # this copy still says pending
    await task.asave()
    assert task.status == "completed"
    assert task.result == "answer"
    assert task.internal_status == "sent to customer"


def test_more_than_255_characters_is_refused_before_sending(setup):
    task = Tasks(setup.configuration).create(setup.agent["id"], prompt="x")
    task.internal_status = "a" * 255
    task.save()
    task.internal_status = "b" * 256
    with pytest.raises(ModuleException) as caught:
        task.save()
    assert caught.value.status_code == 422
    assert caught.value.description == "internal_status: at most 255 characters (got 256)"
    assert setup.raw(task)["internal_status"] == "a" * 255

    # Not even a connection is attempted: against a port nothing listens on it still says 422.
    offline = Task.model_validate(task.model_dump())
    offline._configuration = Configuration(base_url="http://127.0.0.1:9/api", api_key="k")
    with pytest.raises(ModuleException) as caught:
        offline.save()
    assert caught.value.status_code == 422
    with pytest.raises(ModuleException) as caught:
        Tasks(offline._configuration).update(task.id, internal_status="c" * 300)
    assert caught.value.status_code == 422

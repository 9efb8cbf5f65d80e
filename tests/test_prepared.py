"""console.prepared.KeyedRead gives what QuerySet.get gives, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from django.db import connection, transaction
from django.db.models.query_utils import DeferredAttribute
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from console.models import Agent, Organization
from console.prepared import KeyedRead
from tasks_app.models import Status, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def task() -> Task:
    org = Organization.objects.create(name="Prepared Org")
    agent = Agent.objects.create(organization=org, name="Prepared", framework="builtin")
    return Task.objects.create(
        organization=org,
        agent=agent,
        input_text="héllo ☃",
        input_files=["https://files.test/a.pdf"],
        input_user={"email": "a@b.test", "nested": {"n": 1}},
        status=Status.EXECUTING,
        lease_owner="worker-1",
        lease_expires_at=timezone.now(),
        last_seq=7,
    )


def fields(obj) -> dict:
    """Every loaded (not deferred) field's value, as the instance holds it."""
    return {
        f.attname: obj.__dict__[f.attname] for f in obj._meta.concrete_fields if f.attname in obj.__dict__
    }


FULL = KeyedRead(Task, lambda pk: Task.objects.filter(pk=pk))
SOME = KeyedRead(Task, lambda pk: Task.objects.only("id", "status", "last_seq", "input_user").filter(pk=pk))
LOCKED = KeyedRead(Task, lambda pk: Task.objects.select_for_update(of=("self",)).filter(pk=pk))
SCOPED = KeyedRead(Agent, lambda pk, org: Agent.objects.filter(pk=pk, organization_id=org), keys=2)


def test_a_full_row_is_what_get_returns(task):
    got = FULL.get(task.id)
    assert fields(got) == fields(Task.objects.get(pk=task.id))
    assert got.input_user == {"email": "a@b.test", "nested": {"n": 1}}  # JSON converted
    assert isinstance(got.lease_expires_at, datetime) and timezone.is_aware(got.lease_expires_at)
    assert got.input_text == "héllo ☃"
    assert got._state.adding is False and got._state.db == "default"


def test_only_some_columns_leaves_the_rest_deferred_as_only_does(task):
    got = SOME.get(task.id)
    orm = Task.objects.only("id", "status", "last_seq", "input_user").get(pk=task.id)
    assert fields(got) == fields(orm)
    assert got.get_deferred_fields() == orm.get_deferred_fields()
    assert isinstance(Task.__dict__["result"], DeferredAttribute)
    assert got.input_text == "héllo ☃"  # a deferred field loads on access, as with only()


def test_a_row_read_is_saved_like_an_orm_row(task):
    with transaction.atomic():
        got = LOCKED.get(task.id)
        got.status = Status.COMPLETED
        got.save(update_fields=["status"])
    assert Task.objects.get(pk=task.id).status == Status.COMPLETED


def test_several_keys_all_filter(task):
    assert SCOPED.get(task.agent_id, task.organization_id).pk == task.agent_id
    other = Organization.objects.create(name="Other Org")
    with pytest.raises(Agent.DoesNotExist):
        SCOPED.get(task.agent_id, other.id)  # another organization's agent: not found


def test_no_row_is_does_not_exist(task):
    with pytest.raises(Task.DoesNotExist):
        FULL.get("no-such-task")
    with pytest.raises(Task.DoesNotExist):
        FULL.get("")


def test_keys_are_parameters_not_sql(task):
    """A key is sent as a parameter: quotes and SQL in it match nothing and change nothing."""
    with pytest.raises(Task.DoesNotExist):
        FULL.get(f"{task.id}' OR '1'='1")
    assert Task.objects.filter(pk=task.id).exists()


def test_other_key_types_take_the_orms_path(task):
    with pytest.raises(Task.DoesNotExist):
        FULL.get(12345)  # an int: the ORM converts it for the CharField and finds nothing
    with pytest.raises(TypeError):
        FULL.get(task.id, task.id)  # the number of keys is fixed


def test_each_thread_compiles_on_its_own_connection(task):
    found: list[str] = []

    def read() -> None:
        try:
            found.append(FULL.get(task.id).pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == [task.id] * 3
    assert FULL.get(task.id).pk == task.id


def test_a_shape_with_joins_or_order_is_refused():
    read = KeyedRead(Task, lambda pk: Task.objects.select_related("agent").filter(pk=pk))
    with pytest.raises(ValueError, match="own columns"):
        read.get("x")


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_locking_read_needs_a_transaction_and_locks_the_row(task):
    with pytest.raises(TransactionManagementError):
        LOCKED.get(task.id)
    with transaction.atomic():
        LOCKED.get(task.id)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND pid = pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1  # FOR UPDATE took the row: this transaction has an id

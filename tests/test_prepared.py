"""console.prepared.KeyedRead gives what QuerySet.get gives, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from console import prepared
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
    assert "result" in got.get_deferred_fields() and "result" not in got.__dict__
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


def compiles(monkeypatch) -> list[str]:
    """Count the compiles of every KeyedRead (each compiles once per thread and connection)."""
    seen: list[str] = []
    real = prepared._Compiled

    class Counted(real):
        def __init__(self, *args, **kwargs):
            seen.append(threading.current_thread().name)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(prepared, "_Compiled", Counted)
    return seen


def test_a_shape_is_compiled_once_per_thread(task, monkeypatch):
    seen = compiles(monkeypatch)
    read = KeyedRead(Task, lambda pk: Task.objects.filter(pk=pk))
    for _ in range(5):
        assert read.get(task.id).pk == task.id
    assert len(seen) == 1
    found: list[str] = []

    def other_thread() -> None:
        try:
            found.append(read.get(task.id).pk)
            found.append(read.get(task.id).pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=other_thread, name=f"reader-{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == [task.id] * 6
    assert sorted(seen[1:]) == ["reader-0", "reader-1", "reader-2"]  # each on its own connection


def test_a_replaced_connection_is_compiled_for_again(task, monkeypatch):
    from django.db import connections

    seen = compiles(monkeypatch)
    read = KeyedRead(Task, lambda pk: Task.objects.filter(pk=pk))
    read.get(task.id)
    old = connections["default"]
    fresh = connections.create_connection("default")
    connections["default"] = fresh
    try:
        assert read.get(task.id).pk == task.id
    finally:
        connections["default"] = old
        fresh.close()
    assert len(seen) == 2


@pytest.mark.parametrize(
    "build",
    [
        lambda pk: Task.objects.select_related("agent").filter(pk=pk),
        lambda pk: Task.objects.filter(pk=pk).distinct(),
        lambda pk: Task.objects.filter(pk=pk)[:1],
        lambda pk: Task.objects.filter(pk=pk).values("id"),
        lambda pk: Task.objects.filter(input_text__contains=pk),
        lambda pk: Task.objects.filter(pk=pk, agent_id=pk),  # one key used twice
    ],
    ids=["select_related", "distinct", "slice", "values", "contains", "key-twice"],
)
def test_a_shape_get_would_read_otherwise_is_refused(task, build):
    with pytest.raises(ImproperlyConfigured):
        KeyedRead(Task, build).get(task.id)


def test_a_lookup_that_rewrites_its_key_is_refused_or_keeps_it_literal(task):
    """iexact: SQLite escapes the key in Python (refused: a compiled key would go unescaped);
    PostgreSQL compares UPPER(%s) in SQL, so the key goes as it is and `_` stays a character."""
    read = KeyedRead(Task, lambda pk: Task.objects.filter(pk__iexact=pk))
    try:
        got = read.get(task.id.upper())
    except ImproperlyConfigured:
        assert connection.vendor == "sqlite"
        return
    assert got.pk == task.id
    with pytest.raises(Task.DoesNotExist):
        read.get(task.id[:-1] + "_")  # not a wildcard


def test_the_models_default_ordering_is_dropped_as_get_drops_it(task, monkeypatch):
    seen = compiles(monkeypatch)
    read = KeyedRead(Task, lambda pk: Task.objects.filter(pk=pk))
    read.get(task.id)
    assert "ORDER BY" not in read._compiled("default").sql
    assert len(seen) == 1


def test_an_unknown_agent_is_a_404_through_the_task_api(task):
    from console.access import Actor
    from console.errors import NotFound
    from tasks_app.actions.reads import get_agent

    actor = Actor(task.organization_id, "admin")
    assert get_agent(actor, task.agent_id).pk == task.agent_id
    with pytest.raises(NotFound):
        get_agent(actor, "no-such-agent")
    with pytest.raises(NotFound):
        get_agent(Actor(Organization.objects.create(name="Elsewhere").id, "admin"), task.agent_id)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_locking_read_needs_a_transaction_and_locks_the_row(task):
    with transaction.atomic():
        LOCKED.get(task.id)  # compiled on this connection: the check below is KeyedRead's own
    with pytest.raises(TransactionManagementError):
        LOCKED.get(task.id)
    with transaction.atomic():
        LOCKED.get(task.id)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND pid = pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1  # FOR UPDATE took the row: this transaction has an id

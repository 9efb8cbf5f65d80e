"""console.prepared.KeyedRead gives what QuerySet.get gives, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from console import prepared
from console.models import Agent, ApiKey, Membership, Organization, hash_api_key
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


# ---- Appends: bulk_create's rows, the INSERT built once per size -----------------------------------


def stored(model, **filters) -> list[dict]:
    """The rows as the ORM reads them back, every column."""
    return [fields(row) for row in model.objects.filter(**filters).order_by("pk")]


def test_appended_rows_are_what_bulk_create_stores(task):
    from tasks_app.models import ActivityEntry, TaskEvent

    now = timezone.now()
    data = [{"text": "héllo ☃", "n": [1, 2.5, None], "deep": {"ok": True}}, "a chunk", None]

    def events(start: int) -> list[TaskEvent]:
        return [
            TaskEvent(task_id=task.id, seq=start + i, type="chunk", time=now, data=d)
            for i, d in enumerate(data)
        ]

    ours = prepared.Appends(TaskEvent).insert(events(100))
    TaskEvent.objects.bulk_create(events(200))
    mine, theirs = stored(TaskEvent, seq__lt=200), stored(TaskEvent, seq__gte=200)
    assert [{**r, "id": None, "seq": r["seq"] % 100} for r in mine] == [
        {**r, "id": None, "seq": r["seq"] % 100} for r in theirs
    ]
    assert all(not row._state.adding and row._state.db == "default" for row in ours)
    entries = [
        ActivityEntry(task_id=task.id, position=50 + i, kind="message", turn=1, data={"i": i})
        for i in range(2)
    ]
    prepared.Appends(ActivityEntry).insert(entries)  # the primary key is the model's (a uuid)
    got = sorted((r["position"], r["id"], r["data"]) for r in stored(ActivityEntry, task_id=task.id))
    assert got == [(e.position, e.id, e.data) for e in entries]


def test_a_task_appended_reads_back_as_saved(task):
    """The create's INSERT of a whole task: every column as Model.save(force_insert=True) stores it."""
    copy = Task(
        organization_id=task.organization_id,
        agent_id=task.agent_id,
        input_text=task.input_text,
        input_files=task.input_files,
        input_user=task.input_user,
        status=task.status,
        lease_owner=task.lease_owner,
        lease_expires_at=task.lease_expires_at,
        last_seq=task.last_seq,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )
    prepared.Appends(Task).insert([copy])
    again = Task.objects.get(pk=copy.id)
    assert {**fields(again), "id": task.id} == fields(Task.objects.get(pk=task.id))


def test_an_insert_is_built_once_per_size_and_is_one_statement(task):
    from django.test.utils import CaptureQueriesContext

    from tasks_app.models import TaskEvent

    appends = prepared.Appends(TaskEvent)
    now = timezone.now()
    with CaptureQueriesContext(connection) as ctx:
        for start in (1, 3, 5):
            appends.insert(
                [TaskEvent(task_id=task.id, seq=start + i, type="t", time=now, data=i) for i in range(2)]
            )
        appends.insert([TaskEvent(task_id=task.id, seq=9, type="t", time=now, data=None)])
    assert len(ctx.captured_queries) == 4
    assert sorted(appends._sql) == [(connection.vendor, 1), (connection.vendor, 2)]
    assert list(TaskEvent.objects.filter(task_id=task.id).values_list("seq", flat=True)) == [
        1,
        2,
        3,
        4,
        5,
        6,
        9,
    ]


def test_a_duplicate_fails_as_bulk_create_fails_and_stores_nothing(task):
    from django.db import IntegrityError

    from tasks_app.models import TaskEvent

    now = timezone.now()
    TaskEvent.objects.create(task_id=task.id, seq=2, type="t", time=now, data=None)
    rows = [TaskEvent(task_id=task.id, seq=s, type="t", time=now, data=None) for s in (1, 2)]
    with pytest.raises(IntegrityError), transaction.atomic():
        prepared.Appends(TaskEvent).insert(rows)
    assert list(TaskEvent.objects.filter(task_id=task.id).values_list("seq", flat=True)) == [2]


def test_what_it_was_not_checked_against_goes_to_bulk_create(task, monkeypatch):
    """More rows than MAX_ROWS, an expression as a value, a row with its auto primary key set."""
    from django.db.models import Value

    from tasks_app.models import TaskEvent

    calls: list[int] = []
    from django.db.models.query import QuerySet

    original = QuerySet.bulk_create

    def counted(self, objs, *args, **kwargs):
        calls.append(len(objs))
        return original(self, objs, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "bulk_create", counted)
    appends, now = prepared.Appends(TaskEvent), timezone.now()
    many = [
        TaskEvent(task_id=task.id, seq=s, type="t", time=now, data=s) for s in range(1, appends.MAX_ROWS + 2)
    ]
    appends.insert(many)
    base = appends.MAX_ROWS + 2
    appends.insert([TaskEvent(task_id=task.id, seq=base, type=Value("expr"), time=now, data=None)])
    appends.insert([TaskEvent(pk=10**9, task_id=task.id, seq=base + 1, type="t", time=now, data=None)])
    assert calls == [appends.MAX_ROWS + 1, 1, 1]
    assert TaskEvent.objects.get(task_id=task.id, seq=base).type == "expr"
    assert TaskEvent.objects.filter(task_id=task.id).count() == appends.MAX_ROWS + 3


def test_sql_null_and_json_values_stay_as_bulk_create_stores_them(task):
    """data=None is SQL NULL on both paths; JSON values holding null stay JSON."""
    from tasks_app.models import TaskEvent

    now = timezone.now()
    values = [None, {"a": None}, [None], "x"]

    def events(start: int) -> list[TaskEvent]:
        return [
            TaskEvent(task_id=task.id, seq=start + i, type="t", time=now, data=d)
            for i, d in enumerate(values)
        ]

    prepared.Appends(TaskEvent).insert(events(10))
    TaskEvent.objects.bulk_create(events(20))
    rows = TaskEvent.objects.filter(task_id=task.id)
    assert set(rows.filter(data__isnull=True).values_list("seq", flat=True)) == {10, 20}
    assert [r.data for r in rows.filter(seq__lt=20).order_by("seq")] == values
    assert [r.data for r in rows.filter(seq__gte=20).order_by("seq")] == values


def test_insert_one_sends_the_save_signals_when_anything_listens(task):
    from django.db.models.signals import post_save

    seen: list[tuple[str, bool]] = []

    def heard(sender, instance, created, **kwargs) -> None:
        seen.append((instance.id, created))

    quiet = Task(organization_id=task.organization_id, agent_id=task.agent_id, input_text="quiet")
    prepared.Appends(Task).insert_one(quiet)
    post_save.connect(heard, sender=Task, dispatch_uid="test_prepared.heard")
    try:
        heard_one = Task(organization_id=task.organization_id, agent_id=task.agent_id, input_text="heard")
        prepared.Appends(Task).insert_one(heard_one)
    finally:
        post_save.disconnect(sender=Task, dispatch_uid="test_prepared.heard")
    assert seen == [(heard_one.id, True)]
    assert set(
        Task.objects.filter(input_text__in=["quiet", "heard"]).values_list("input_text", flat=True)
    ) == {
        "quiet",
        "heard",
    }


def test_a_stream_read_of_an_unknown_task_is_failed_with_nothing(task):
    from tasks_app import events

    assert events._read("no-such-task", 0) == ([], "failed")
    assert events._read(task.id, 7) == ([], task.status)  # nothing after its last seq: no log read


def test_a_new_streams_log_read_is_the_log_from_its_start_in_seq_order(task):
    from tasks_app import events, wire
    from tasks_app.models import TaskEvent

    now = timezone.now()
    TaskEvent.objects.bulk_create(
        [
            TaskEvent(task_id=task.id, seq=s, type="chunk", time=now, data=f"part {s}")
            for s in (4, 2, 7, 1, 3, 5, 6)
        ]
    )
    envelopes, status = events._read(task.id, 0)
    assert status == task.status
    assert envelopes == [wire.envelope(e) for e in TaskEvent.objects.filter(task_id=task.id).order_by("seq")]
    assert [e["seq"] for e in envelopes] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["seq"] for e in events._read(task.id, 5)[0]] == [6, 7]  # after a resume point: the ORM's read


# ---- RowUpdates: update() and save(update_fields) of one row, the UPDATE built once per columns ----


TASK_ROW = prepared.RowUpdates(Task)


def test_an_update_stores_what_the_orms_update_stores(task):
    now = timezone.now()
    values = {"status": Status.COMPLETED, "result": "héllo ☃", "finished_at": now, "lease_owner": "",
              "lease_expires_at": None, "is_manually_stopped": True, "tokens": {"prompt": 3, "nested": [None]},
              "last_seq": 9}  # fmt: skip
    twin = Task.objects.create(
        organization_id=task.organization_id, agent_id=task.agent_id, input_text="twin"
    )
    assert TASK_ROW.set(task.id, values) == 1
    Task.objects.filter(pk=twin.id).update(**values)
    ours, theirs = fields(Task.objects.get(pk=task.id)), fields(Task.objects.get(pk=twin.id))
    assert (
        {k: ours[k] for k in values}
        == {k: theirs[k] for k in values}
        == {
            **values,
            "finished_at": now,
        }
    )


def test_an_update_of_no_row_is_zero_and_a_save_of_no_row_fails_as_save_fails(task):
    from django.db import DatabaseError

    assert TASK_ROW.set("no-such-task", {"last_seq": 1}) == 0
    ghost = Task(organization_id=task.organization_id, agent_id=task.agent_id)
    with pytest.raises(Task.NotUpdated, match="did not affect any rows"):
        TASK_ROW.save(ghost, ["status"])
    assert issubclass(Task.NotUpdated, DatabaseError)
    with transaction.atomic():
        with pytest.raises(Task.NotUpdated):
            TASK_ROW.save(ghost, ["status"])
        assert transaction.get_rollback()  # as save() marks it


def test_a_save_goes_through_save_itself_when_a_save_signal_listens(task):
    from django.db.models.signals import pre_save

    heard: list[str] = []
    pre_save.connect(lambda sender, instance, **kw: heard.append(instance.status), sender=Task, weak=False,
                     dispatch_uid="test_prepared.update_heard")  # fmt: skip
    try:
        row = Task.objects.get(pk=task.id)
        row.status = Status.FAILED
        TASK_ROW.save(row, ["status"])
    finally:
        pre_save.disconnect(sender=Task, dispatch_uid="test_prepared.update_heard")
    assert heard == [Status.FAILED] and Task.objects.get(pk=task.id).status == Status.FAILED


def test_a_save_takes_field_names_foreign_keys_included(task, alice):
    from console.models import Membership

    member = Membership.objects.filter(organization_id=alice.org.id).first()
    row = Task.objects.get(pk=task.id)
    row.vault_member, row.status, row.input_text = member, Status.STOPPED, "not saved"
    TASK_ROW.save(row, ["vault_member", "status"])
    again = Task.objects.get(pk=task.id)
    assert (again.vault_member_id, again.status, again.input_text) == (
        member.pk,
        Status.STOPPED,
        task.input_text,
    )


def test_an_update_is_built_once_per_columns_and_takes_expressions_the_orms_way(task):
    from django.db.models import F
    from django.test.utils import CaptureQueriesContext

    updates = prepared.RowUpdates(Task)
    with CaptureQueriesContext(connection) as ctx:
        updates.set(task.id, {"last_seq": 8})
        updates.set(task.id, {"last_seq": 9})
        updates.set(task.id, {"last_seq": 9, "last_activity": 2})
        updates.set(task.id, {"last_seq": F("last_seq") + 1})  # the ORM's own update
    assert len(ctx.captured_queries) == 4
    assert sorted(updates._sql) == [
        (connection.vendor, ("last_seq",)),
        (connection.vendor, ("last_seq", "last_activity")),
    ]
    row = Task.objects.get(pk=task.id)
    assert (row.last_seq, row.last_activity) == (10, 2)


def test_a_failed_update_marks_its_transaction_for_rollback_as_update_does(task):
    from django.db import IntegrityError

    with transaction.atomic():
        with pytest.raises(IntegrityError):
            TASK_ROW.set(task.id, {"status": None})
        assert transaction.get_rollback()
    assert Task.objects.get(pk=task.id).status == task.status


# ---- KeyedList: a list read compiled once, its ordering and slice kept --------------------------


def test_a_list_read_is_what_the_queryset_lists_in_its_order_and_slice(task):
    from console.models import GraphItem
    from tasks_app.models import TaskEvent

    now = timezone.now()
    TaskEvent.objects.bulk_create(
        [TaskEvent(task_id=task.id, seq=s, type="t", time=now, data={"s": s}) for s in (3, 1, 4, 2, 5)]
    )
    log = prepared.KeyedList(TaskEvent, lambda t: TaskEvent.objects.filter(task_id=t).order_by("seq")[:4])
    assert [fields(e) for e in log.all(task.id)] == [
        fields(e) for e in TaskEvent.objects.filter(task_id=task.id).order_by("seq")[:4]
    ]
    assert [e.seq for e in log.all(task.id)] == [1, 2, 3, 4]
    assert log.all("no-such-task") == []
    for position, key in ((2, "b"), (1, "c"), (1, "a")):
        GraphItem.objects.create(agent_id=task.agent_id, key=key, type="mcp", name=key, position=position)
    items = prepared.KeyedList(GraphItem, lambda a: GraphItem.objects.filter(agent_id=a))
    assert [i.pk for i in items.all(task.agent_id)] == [i.pk for i in task.agent.graph_items.all()]
    assert [i.key for i in items.all(task.agent_id)][-1] == "b"  # the model's ordering: position, id
    assert not items.all(task.agent_id)[0]._state.adding


def test_a_list_read_compiles_once_and_takes_the_orms_path_for_other_keys(task, monkeypatch):
    from console.models import GraphItem

    seen = compiles(monkeypatch)
    items = prepared.KeyedList(GraphItem, lambda a: GraphItem.objects.filter(agent_id=a))
    for _ in range(3):
        assert items.all(task.agent_id) == []
    assert len(seen) == 1
    GraphItem.objects.create(agent_id=task.agent_id, key="k", type="mcp", name="k")
    assert [i.key for i in items.all(task.agent)] == ["k"]  # not a string: the queryset itself
    assert len(seen) == 1


def test_a_locking_list_read_is_refused(task):
    locked = prepared.KeyedList(Task, lambda pk: Task.objects.select_for_update().filter(pk=pk))
    with pytest.raises(ImproperlyConfigured), transaction.atomic():
        locked.all(task.id)


# -- KeyedValues: one row's columns across relations, as values_list().get() gives them -------------

KEY_COLUMNS = (
    "pk",
    "revoked_at",
    "last_used_at",
    "role",
    "membership__organization_id",
    "membership__deactivated_at",
    "membership__user__is_active",
    "membership__user__email",
)
KEY_ROW = prepared.KeyedValues(
    ApiKey, lambda key_hash: ApiKey.objects.filter(key_hash=key_hash).values_list(*KEY_COLUMNS)
)


@pytest.fixture
def keys(task) -> list[ApiKey]:
    org = task.organization
    out = []
    for i, role in enumerate(["", "viewer"]):
        user = get_user_model().objects.create_user(
            f"u{i}@prepared.test", f"u{i}@prepared.test", "pw-long-enough"
        )
        member = Membership.objects.create(organization=org, user=user, role="admin")
        key, _raw = ApiKey.issue(member, name=f"k{i}", role=role)
        out.append(key)
    # SQL NULL and set datetimes and booleans, both ways
    ApiKey.objects.filter(pk=out[1].pk).update(revoked_at=timezone.now(), last_used_at=timezone.now())
    Membership.objects.filter(pk=out[1].membership_id).update(deactivated_at=timezone.now())
    get_user_model().objects.filter(pk=out[1].membership.user_id).update(is_active=False)
    return out


def test_a_values_row_is_what_values_list_get_gives(keys):
    for key in keys:
        expected = ApiKey.objects.filter(key_hash=key.key_hash).values_list(*KEY_COLUMNS).get()
        got = KEY_ROW.get(key.key_hash)
        assert got == expected
        assert [type(v) for v in got] == [type(v) for v in expected]  # converted as the ORM converts
    revoked = KEY_ROW.get(keys[1].key_hash)
    assert timezone.is_aware(revoked[1]) and revoked[6] is False
    assert KEY_ROW.get(keys[0].key_hash)[1:3] == (None, None)


def test_a_values_read_compiles_once_and_fails_as_get_fails(keys, task, monkeypatch):
    seen = compiles(monkeypatch)
    read = prepared.KeyedValues(ApiKey, lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk", "name"))
    for key in keys * 3:
        assert read.get(key.key_hash) == (key.pk, key.name)
    assert len(seen) == 1
    with pytest.raises(ApiKey.DoesNotExist):
        read.get("no-such-hash")
    Task.objects.create(organization=task.organization, agent=task.agent, input_text="second")
    by_agent = prepared.KeyedValues(Task, lambda a: Task.objects.filter(agent_id=a).values_list("id"))
    with pytest.raises(Task.MultipleObjectsReturned):
        by_agent.get(task.agent_id)
    with pytest.raises(ApiKey.DoesNotExist):
        read.get(12345)  # not a string: the ORM's own path


@pytest.mark.parametrize(
    "build",
    [
        lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk", flat=True),
        lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk", named=True),
        lambda h: ApiKey.objects.filter(key_hash=h).values("pk"),
        lambda h: ApiKey.objects.filter(key_hash=h),
        lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk").distinct(),
        lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk")[:1],
    ],
    ids=["flat", "named", "dicts", "instances", "distinct", "slice"],
)
def test_a_values_shape_get_would_read_otherwise_is_refused(keys, build):
    with pytest.raises(ImproperlyConfigured):
        prepared.KeyedValues(ApiKey, build).get(keys[0].key_hash)


def test_a_keys_actor_is_read_from_its_row_as_the_orm_reads_it(keys):
    from console import access
    from console.errors import Unauthorized

    key = keys[0]
    actor = access._actor_from_row(key.key_hash)
    key = ApiKey.objects.select_related("membership__user").get(pk=key.pk)
    assert actor == access.Actor(
        organization_id=key.membership.organization_id,
        role=key.effective_role,
        user_id=key.membership.user_id,
        api_key_id=key.pk,
        label=key.display,
        user_email=key.membership.user.email,
        member_id=key.membership_id,
        vault_id=key.membership.vault_id,
    )
    assert key.last_used_at is not None  # the use was recorded
    limited = ApiKey.objects.create(
        membership=key.membership, name="viewer", prefix="p", last4="abcd", key_hash="h" * 64, role="viewer"
    )
    assert access._actor_from_row(limited.key_hash).role == "viewer"  # the lower of key and member
    with pytest.raises(Unauthorized, match="revoked"):
        access._actor_from_row(keys[1].key_hash)
    ApiKey.objects.filter(pk=keys[1].pk).update(revoked_at=None)
    with pytest.raises(Unauthorized, match="deactivated"):
        access._actor_from_row(keys[1].key_hash)
    with pytest.raises(Unauthorized, match="Invalid"):
        access._actor_from_row("0" * 64)


def test_a_keys_actor_has_its_own_ids_each_refusal_alone_and_never_more_than_its_member():
    from console import access
    from console.errors import Unauthorized

    user_model = get_user_model()
    org = Organization.objects.create(name="Ids Apart")
    other = Organization.objects.create(name="Other Org")

    def make(n: int, member_role: str, role: str) -> ApiKey:
        """Ids set apart (user 1000s, member 2000s, key 3000s), so a swapped id cannot pass."""
        user = user_model.objects.create_user(f"s{n}", f"s{n}@prepared.test", pk=1000 + n)
        member = Membership.objects.create(pk=2000 + n, organization=org, user=user, role=member_role)
        Membership.objects.create(pk=2500 + n, organization=other, user=user, role="owner")  # not this key's
        raw = f"atc_prepared_{n}_secret"
        return ApiKey.objects.create(
            pk=3000 + n, membership=member, name=f"k{n}", prefix=raw[:8], last4=raw[-4:],
            key_hash=hash_api_key(raw), role=role,
        )  # fmt: skip

    key = make(0, "admin", "")
    assert len({key.pk, key.membership_id, key.membership.user_id}) == 3
    actor = access._actor_from_row(key.key_hash)
    assert (actor.api_key_id, actor.member_id, actor.user_id, actor.organization_id) == (
        key.pk,
        key.membership_id,
        key.membership.user_id,
        org.pk,
    )
    assert actor.role == "admin"
    assert access._actor_from_row(make(1, "member", "owner").key_hash).role == "member"  # key above member
    inactive = make(2, "admin", "")
    user_model.objects.filter(pk=inactive.membership.user_id).update(is_active=False)
    with pytest.raises(Unauthorized, match="deactivated"):
        access._actor_from_row(inactive.key_hash)
    gone = make(3, "admin", "")
    Membership.objects.filter(pk=gone.membership_id).update(deactivated_at=timezone.now())
    with pytest.raises(Unauthorized, match="deactivated"):
        access._actor_from_row(gone.key_hash)


def test_the_key_read_authentication_uses_is_its_values_list_get(keys):
    from console import access

    for key in keys:
        expected = access._KEY_ROW._build(key.key_hash).get()
        assert access._KEY_ROW.get(key.key_hash) == expected
        assert len(expected) == 14


def test_a_values_read_refuses_locks_transforms_and_another_model(keys):
    h = keys[0].key_hash
    for build in (
        lambda h: ApiKey.objects.select_for_update().filter(key_hash=h).values_list("pk"),
        lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk", "created_at__year"),
    ):
        with pytest.raises(ImproperlyConfigured), transaction.atomic():  # a lock compiles only in one
            prepared.KeyedValues(ApiKey, build).get(h)
    with pytest.raises(ImproperlyConfigured):
        prepared.KeyedValues(Membership, lambda h: ApiKey.objects.filter(key_hash=h).values_list("pk")).get(h)


# -- integer keys (a foreign key's id) ------------------------------------------------------------


def test_an_integer_key_reads_what_the_queryset_reads_and_compiles_once(keys, monkeypatch):
    from console.models import UserToken

    member_id = keys[0].membership_id
    other_id = keys[1].membership_id
    org = keys[0].membership.organization_id
    for member, item in ((member_id, "a"), (member_id, "b"), (other_id, "a")):
        UserToken.objects.create(
            organization_id=org, member_id=member, graph_item_key=item, token_encrypted="x", last4="x"
        )
    seen = compiles(monkeypatch)
    rows = prepared.KeyedList(
        UserToken, lambda o, m: UserToken.objects.filter(organization_id=o, member_id=m), (str, int)
    )
    for member in (member_id, other_id, member_id):
        assert [fields(r) for r in rows.all(org, member)] == [
            fields(r) for r in UserToken.objects.filter(organization_id=org, member_id=member)
        ]
    assert [r.graph_item_key for r in rows.all(org, member_id)] == ["a", "b"]
    assert rows.all(org, -1) == [] and rows.all("no-such-org", member_id) == []
    assert len(seen) == 1
    # a key of another type than compiled for goes to the ORM, with its conversions and errors
    assert [r.graph_item_key for r in rows.all(org, str(other_id))] == ["a"]
    rows.all(org, True)  # a bool is not the int it equals here: the ORM's path too
    assert len(seen) == 1
    with pytest.raises(TypeError, match="takes 2 key"):
        rows.all(org)


def test_a_key_type_other_than_str_or_int_is_refused():
    with pytest.raises(ImproperlyConfigured, match="strings or integers"):
        prepared.KeyedList(Task, lambda pk: Task.objects.filter(pk=pk), (float,))


def test_the_vaults_read_of_an_owners_rows_is_the_owners_rows(keys):
    from console import vault
    from console.models import UserToken

    org = keys[0].membership.organization_id
    member = vault.Owner(member_id=keys[0].membership_id)
    outsider = vault.Owner(external_id="end-user-1")
    for owner, item, needs in ((member, "a", False), (member, "b", True), (outsider, "a", False)):
        UserToken.objects.create(
            organization_id=org,
            member_id=owner.member_id,
            external_user_id=owner.external_id,
            graph_item_key=item,
            token_encrypted="x",
            last4="x",
            needs_signin=needs,
        )
    for owner in (member, outsider, vault.Owner(external_id="nobody-here")):
        assert [r.pk for r in vault._signed_in_rows(org, owner)] == [
            r.pk for r in owner.rows(org).filter(needs_signin=False)
        ]
    assert [r.graph_item_key for r in vault._signed_in_rows(org, member)] == ["a"]
    for owner in (member, outsider, vault.Owner(external_id="nobody-here"), vault.NOBODY):
        assert sorted(r.pk for r in vault._owner_rows(org, owner)) == sorted(r.pk for r in owner.rows(org))
    assert sorted(r.graph_item_key for r in vault._owner_rows(org, member)) == ["a", "b"]

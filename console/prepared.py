"""The hot path's SQL, compiled or built once instead of once per call: reads of one row by key
(`KeyedRead`, or its columns across relations as a tuple: `KeyedValues`) and of a list
(`KeyedList`), compiled once per thread; appends of rows (`Appends`, an
INSERT per row count) and updates of one row by primary key (`RowUpdates`, an UPDATE per set of
columns), built once. Each class's docstring says what it keeps of the ORM and what goes back to it.

Why: the runtime's hot writes each start by reading the row they change (a progress batch its task's
counters, a finish the whole task, a create its agent). Through `QuerySet.get` that read costs
~0.25-0.5 ms of CPU on this machine, almost all of it building and compiling the query; executing
the compiled SQL is ~0.02 ms. A `KeyedRead` is the same queryset, compiled once on each thread's
connection with placeholder keys; a call fills in its keys, executes, applies the ORM's own
converters and builds the instance with `Model.from_db`, as `ModelIterable` does. What comes back is
what `.get()` returns (deferred fields, `_state`, a row lock for `select_for_update`), so a caller
saves it as before.

Only plain shapes: one model's own columns (`only()` allowed), or for `KeyedValues` a `values_list()`
of named fields (across relations), each string key compared once for equality; no
`select_related`, annotations, distinct, slices or other iterables (ImproperlyConfigured at the
first read). The model's default ordering is dropped, as `.get()` drops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import NOT_PROVIDED, AutoField, Model, QuerySet
from django.db.models.expressions import Col
from django.db.models.query import ModelIterable, ValuesListIterable
from django.db.models.signals import post_save, pre_save
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)

# Keys no caller passes, to find where each key goes in the compiled params. Two sets, the second
# with the characters a lookup would escape or quote: a shape whose SQL or params differ between
# them transforms its keys (iexact, contains...) and is refused. Integer keys (a foreign key's id)
# get two sets of integers no row has, far apart.
_PLACEHOLDERS = ("\x00console.prepared.{}\x00", "\x00console.prepared.%_\\'{}\x00")
_INT_PLACEHOLDERS = (-(2**62), -(2**61))
KeyType = type[str] | type[int]


def _stand_in(form: int, kind: KeyType, i: int) -> str | int:
    return _PLACEHOLDERS[form].format(i) if kind is str else _INT_PLACEHOLDERS[form] - i


class _Compiled:
    __slots__ = ("attnames", "compiler", "converters", "fetch_mode", "for_update", "params", "slots", "sql")

    def __init__(
        self,
        build: Callable[..., QuerySet],
        using: str,
        keys: tuple[KeyType, ...],
        many: bool = False,
        as_values: bool = False,
    ) -> None:
        forms = []
        for form in range(len(_PLACEHOLDERS)):
            stand_ins = [_stand_in(form, kind, i) for i, kind in enumerate(keys)]
            queryset = build(*stand_ins)
            _check_shape(queryset, many, as_values)
            if not many:
                queryset = queryset.order_by()  # .get() drops the model's default ordering too
            compiler = queryset.query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            if any(list(params).count(value) != 1 for value in stand_ins):
                raise ImproperlyConfigured("a prepared read: each key must be compared once, for equality")
            forms.append(
                (sql, list(params), [list(params).index(value) for value in stand_ins], compiler, queryset)
            )
        (sql, params, slots, compiler, queryset), (other_sql, other_params, other_slots, *_rest) = forms
        if (
            sql != other_sql
            or slots != other_slots
            or _without(params, slots) != _without(other_params, slots)
        ):
            raise ImproperlyConfigured(
                "a prepared read: a key is transformed by its lookup; only equality is taken"
            )
        self.compiler, self.sql, self.params, self.slots = compiler, sql, params, slots
        select = compiler.select
        if as_values and not all(isinstance(column, Col) for column, _sql, _alias in select):
            raise ImproperlyConfigured("KeyedValues reads fields as they are stored: no transforms")
        self.attnames = [column.target.attname for column, _sql, _alias in select]
        self.converters = compiler.get_converters([column for column, _sql, _alias in select])
        self.for_update = queryset.query.select_for_update
        self.fetch_mode = queryset._fetch_mode


def _without(params: list[Any], slots: list[int]) -> list[Any]:
    return [p for i, p in enumerate(params) if i not in slots]


def _check_shape(queryset: QuerySet, many: bool = False, values: bool = False) -> None:
    """One model's own columns, as `.get()` would read them (or a list with a fixed slice, `many`),
    or, `values`, a `values_list()` of named fields (across relations) read as one tuple; or
    ImproperlyConfigured."""
    query = queryset.query
    iterable = ValuesListIterable if values else ModelIterable
    if (
        query.select_related
        or query.annotations
        or query.extra
        or query.distinct
        or (query.is_sliced and not many)
        or query.combinator
        or queryset._prefetch_related_lookups
        or queryset._iterable_class is not iterable
        or queryset._fetch_mode.track_peers
    ):
        if values:
            raise ImproperlyConfigured(
                "KeyedValues takes a values_list() of named fields only, read as .get()"
            )
        raise ImproperlyConfigured("KeyedRead takes one model's own columns only, read as .get() reads them")


class _Keyed(Generic[M]):
    """What KeyedRead, KeyedValues and KeyedList share: the queryset builder, each thread's compiled
    form, the key check and the parameters."""

    _many = False  # a list read (all its rows) rather than one row
    _values = False  # a values_list() row (a tuple) rather than a model instance

    def __init__(
        self, model: type[M], build: Callable[..., QuerySet[M]], keys: int | tuple[KeyType, ...] = 1
    ) -> None:
        """`keys`: how many string keys, or each key's type (`str`, or `int` for a foreign key's id)."""
        self._model = model
        self._build = build
        self._types: tuple[KeyType, ...] = (str,) * keys if isinstance(keys, int) else tuple(keys)
        if any(kind not in (str, int) for kind in self._types):
            raise ImproperlyConfigured("a prepared read's keys are strings or integers")
        self._keys = len(self._types)
        self._local = threading.local()

    def _check(self, keys: tuple[Any, ...], call: str) -> bool:
        """Whether the keys take the compiled path: of the types it was built for, as many."""
        if len(keys) != self._keys:
            raise TypeError(f"{type(self).__name__}.{call} takes {self._keys} key(s), not {len(keys)}")
        # compiled for these types (exactly: a bool is no int here): anything else as the ORM does
        return all(type(key) is kind for key, kind in zip(keys, self._types, strict=True))

    def _compiled(self, using: str) -> _Compiled:
        """This thread's compiled form for `using` (a thread's connection is its own); compiled
        again if the thread's connection object was replaced (the old one is not kept)."""
        cache: dict[str, _Compiled] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        compiled = cache.get(using)
        if compiled is None or compiled.compiler.connection is not connections[using]:
            compiled = _Compiled(self._build, using, self._types, many=self._many, as_values=self._values)
            if compiled.compiler.query.model is not self._model:  # its DoesNotExist is what callers catch
                raise ImproperlyConfigured(
                    f"{type(self).__name__} of {self._model.__name__} builds another model's query"
                )
            if (self._many or self._values) and compiled.for_update:
                raise ImproperlyConfigured(
                    f"{type(self).__name__} reads without locks; lock rows through the ORM"
                )
            cache[using] = compiled
        return compiled

    def _one(self, compiled: _Compiled, connection: Any, keys: tuple[str, ...]) -> tuple[Any, ...]:
        """The one row the keys match, converted as the ORM converts it (its errors as `.get()`'s)."""
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, self._params(compiled, keys))
            rows = cursor.fetchmany(2)
        if not rows:
            raise self._model.DoesNotExist(f"{self._model._meta.object_name} matching query does not exist.")
        if len(rows) > 1:
            raise self._model.MultipleObjectsReturned(
                f"get() returned more than one {self._model._meta.object_name}"
            )
        row = rows[0]
        if compiled.converters:
            row = next(iter(compiled.compiler.apply_converters([row], compiled.converters)))
        return tuple(row)

    @staticmethod
    def _params(compiled: _Compiled, keys: tuple[str | int, ...]) -> list[Any]:
        params = list(compiled.params)
        for slot, key in zip(compiled.slots, keys, strict=True):
            params[slot] = key
        return params


class KeyedRead(_Keyed[M]):
    """`build(*keys)` is the queryset; `get(*keys)` is `build(*keys).get()` without the compiling.

    Raises the model's `DoesNotExist` when no row matches, as `.get()` does. Keys that are not
    strings take the ORM's own path (`.get()`), with its conversions and errors.
    """

    def get(self, *keys: str, using: str = DEFAULT_DB_ALIAS) -> M:
        if not self._check(keys, "get"):
            return self._build(*keys).using(using).get()
        compiled = self._compiled(using)
        connection = connections[using]
        if compiled.for_update and connection.features.has_select_for_update and connection.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        row = self._one(compiled, connection, keys)
        return self._model.from_db(using, compiled.attnames, row, fetch_mode=compiled.fetch_mode)


class KeyedValues(_Keyed[M]):
    """`build(*keys)` is a `values_list(...)` queryset; `get(*keys)` is its `.get()`, compiled once.

    For a hot read of one row whose columns span relations (an API key with its member and user,
    which `select_related` would read as three instances): the tuple `.get()` gives, each column
    converted as the ORM converts it; the model's `DoesNotExist` or `MultipleObjectsReturned` as
    `.get()` raises them. Only a plain `values_list()` of named fields (not `flat` or `named`).
    Keys that are not strings take the ORM's own path.
    """

    _values = True

    def get(self, *keys: str, using: str = DEFAULT_DB_ALIAS) -> tuple[Any, ...]:
        if not self._check(keys, "get"):
            return self._build(*keys).using(using).get()
        return self._one(self._compiled(using), connections[using], keys)


class KeyedList(_Keyed[M]):
    """`build(*keys)` is the queryset; `all(*keys)` is `list(build(*keys))` without the compiling.

    What KeyedRead does for one row, for the rows of a list read on the hot path (an agent's graph
    items at each run's load, a new stream's log): the queryset's own ordering and a fixed slice
    are kept, as they were when it compiled (a slice's size is part of the shape: one KeyedList per
    size). Keys that are not strings take the ORM's own path.
    """

    _many = True

    def all(self, *keys: str, using: str = DEFAULT_DB_ALIAS) -> list[M]:
        if not self._check(keys, "all"):
            return list(self._build(*keys).using(using))
        compiled = self._compiled(using)
        with connections[using].cursor() as cursor:
            cursor.execute(compiled.sql, self._params(compiled, keys))
            rows = cursor.fetchall()
        if compiled.converters:
            rows = list(compiled.compiler.apply_converters(rows, compiled.converters))
        from_db, attnames, mode = self._model.from_db, compiled.attnames, compiled.fetch_mode
        return [from_db(using, attnames, tuple(row), fetch_mode=mode) for row in rows]


class Appends(Generic[M]):
    """`Model.objects.bulk_create(rows)` for the hot appends of a log, its INSERT built once per size.

    Why: every run appends its events and activity entries a few rows at a time (the create, each
    progress batch, the finish, each push of an external worker), and `bulk_create` builds and
    compiles an insert query per call: ~0.15 ms of CPU for two rows here, most of the call.

    As `bulk_create` does: each row's related objects checked (`_prepare_related_fields_for_save`),
    each field's `pre_save(add=True)` (defaults set by the model's `__init__`, `auto_now_add`) and
    `get_db_prep_save` on the connection, in the model's concrete field order, then each row marked
    saved (`_state`). What it does not: read back auto primary keys (the callers never use a log
    row's id; it stays None, so such a row is not hashable), nor send signals (neither does
    `bulk_create`; `insert_one` sends them through `save()` when anything listens). Anything it was
    not checked against goes to `bulk_create` itself: more rows than MAX_ROWS or than the backend's
    parameter limit allows, a field with its own placeholder SQL, a database default or a value the
    database returns, an expression as a value, a row whose primary key is to be generated on save.
    """

    MAX_ROWS = 64  # a log's appends are a few rows; a push of up to 500 events goes to bulk_create

    def __init__(self, model: type[M]) -> None:
        self._model = model
        fields = [f for f in model._meta.concrete_fields if not f.generated]
        # An auto primary key is the database's to assign, as bulk_create leaves it for rows without one.
        self._fields = [f for f in fields if not isinstance(f, AutoField)]
        self._auto_pk = isinstance(model._meta.pk, AutoField)
        self._plain = not any(
            hasattr(f, "get_placeholder_sql") or f.db_default is not NOT_PROVIDED or f.db_returning
            for f in self._fields
        )
        self._sql: dict[tuple[str, int], str] = {}

    def insert(self, rows: list[M], using: str = DEFAULT_DB_ALIAS) -> list[M]:
        """Insert `rows` in one statement; what `bulk_create(rows)` stores, returned as it returns them."""
        if not rows:
            return rows
        connection = connections[using]
        limit = connection.features.max_query_params
        if (
            not self._plain
            or len(rows) > self.MAX_ROWS
            or (limit is not None and len(rows) * len(self._fields) > limit)
            or any(r.pk is not None if self._auto_pk else r.pk is None for r in rows)
        ):
            return self._model.objects.using(using).bulk_create(rows)
        params: list[Any] = []
        for row in rows:
            row._prepare_related_fields_for_save(operation_name="bulk_create")
            for field in self._fields:
                value = field.pre_save(row, add=True)
                if hasattr(value, "resolve_expression"):
                    return self._model.objects.using(using).bulk_create(rows)
                params.append(field.get_db_prep_save(value, connection=connection))
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(self._insert_sql(connection, len(rows)), params)
        for row in rows:
            row._state.adding, row._state.db = False, using
        return rows

    def insert_one(self, row: M, using: str = DEFAULT_DB_ALIAS) -> None:
        """`row.save(force_insert=True)`: through `insert` unless a pre_save or post_save receiver
        listens for the model (then `save()` itself, which sends them)."""
        if pre_save.has_listeners(self._model) or post_save.has_listeners(self._model):
            row.save(force_insert=True, using=using)
        else:
            self.insert([row], using=using)

    def _insert_sql(self, connection: Any, count: int) -> str:
        key = (connection.vendor, count)
        sql = self._sql.get(key)
        if sql is None:
            quote = connection.ops.quote_name
            table = quote(self._model._meta.db_table)
            columns = ", ".join(quote(f.column) for f in self._fields)
            one = "(" + ", ".join(["%s"] * len(self._fields)) + ")"
            sql = self._sql[key] = f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * count)}"
        return sql


def _not_plain(value: Any) -> bool:
    """An expression or a model instance: the ORM's own update() prepares (or refuses) those."""
    return hasattr(value, "resolve_expression") or hasattr(value, "prepare_database_save")


class RowUpdates(Generic[M]):
    """`filter(pk=pk).update(**values)` and `row.save(update_fields=...)` of one row by primary key,
    the UPDATE built once per set of columns.

    Why: a run's claim, each progress batch (its counters) and its finish each update the task's
    row; through the ORM each builds and compiles an update query per call (~0.2 ms of CPU here,
    most of the statement). Values are prepared as the ORM prepares them (`get_db_prep_save`);
    an expression as a value (an `F()`), a field with its own placeholder SQL or a column that is
    not a plain concrete field takes the ORM's own path. A failure inside a transaction marks it for
    rollback, as the ORM's `update()` does.
    """

    def __init__(self, model: type[M]) -> None:
        self._model = model
        self._sql: dict[tuple[str, tuple[str, ...]], tuple[str, list[Any]]] = {}

    def set(self, pk: Any, values: dict[str, Any], using: str = DEFAULT_DB_ALIAS) -> int:
        """`Model.objects.filter(pk=pk).update(**values)`: the number of rows updated (0 or 1)."""
        connection = connections[using]
        key = (connection.vendor, tuple(values))
        shape = self._sql.get(key)
        if shape is None:
            shape = self._shape(connection, tuple(values))
            if shape is None or any(_not_plain(v) for v in values.values()):
                return self._model.objects.using(using).filter(pk=pk).update(**values)
            self._sql[key] = shape
        elif any(_not_plain(v) for v in values.values()):
            return self._model.objects.using(using).filter(pk=pk).update(**values)
        sql, fields = shape
        params = [
            f.get_db_prep_save(values[name], connection=connection)
            for name, f in zip(values, fields, strict=True)
        ]
        params.append(self._model._meta.pk.get_db_prep_value(pk, connection, prepared=False))
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    def save(self, row: M, fields: list[str] | tuple[str, ...], using: str = DEFAULT_DB_ALIAS) -> None:
        """`row.save(update_fields=fields)`: each field's `pre_save` first (`auto_now`), and a
        DatabaseError when no row was updated; through `save()` itself when a save signal listens."""
        if pre_save.has_listeners(self._model) or post_save.has_listeners(self._model):
            row.save(update_fields=fields, using=using)
            return
        meta = self._model._meta
        chosen = [meta.get_field(name) for name in dict.fromkeys(fields)]
        if any(not f.concrete or f.primary_key for f in chosen):
            row.save(update_fields=fields, using=using)  # Django's own checks and errors
            return
        row._prepare_related_fields_for_save(operation_name="save")
        values = {field.attname: field.pre_save(row, add=False) for field in chosen}
        with transaction.mark_for_rollback_on_error(using):
            if not self.set(row.pk, values, using=using):
                raise self._model.NotUpdated("Save with update_fields did not affect any rows.")
        row._state.adding, row._state.db = False, using

    def _shape(self, connection: Any, names: tuple[str, ...]) -> tuple[str, list[Any]] | None:
        meta, quote = self._model._meta, connection.ops.quote_name
        fields = []
        for name in names:
            try:
                field = meta.get_field(name)
            except Exception:
                return None
            if (
                not field.concrete
                or field.model._meta.concrete_model is not meta.concrete_model
                or field.primary_key
                or field.generated
                or hasattr(field, "get_placeholder_sql")
            ):
                return None
            if field.is_relation and name != field.attname:
                return None  # an instance for a foreign key: the ORM's path
            fields.append(field)
        columns = ", ".join(f"{quote(f.column)} = %s" for f in fields)
        sql = f"UPDATE {quote(meta.db_table)} SET {columns} WHERE {quote(meta.pk.column)} = %s"
        return sql, fields

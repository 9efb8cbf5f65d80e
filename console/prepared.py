"""Reads of one row by key whose SQL the ORM compiles once per thread, not once per call.

Why: the runtime's hot writes each start by reading the row they change (a progress batch its task's
counters, a finish the whole task, a create its agent). Through `QuerySet.get` that read costs
~0.25-0.5 ms of CPU on this machine, almost all of it building and compiling the query; executing
the compiled SQL is ~0.02 ms. A `KeyedRead` is the same queryset, compiled once on each thread's
connection with placeholder keys; a call fills in its keys, executes, applies the ORM's own
converters and builds the instance with `Model.from_db`, as `ModelIterable` does. What comes back is
what `.get()` returns (deferred fields, `_state`, a row lock for `select_for_update`), so a caller
saves it as before.

Only plain shapes: one model's own columns (`only()` allowed), string keys compared for equality,
no `select_related`, annotations or ordering. Anything else stays a `QuerySet.get`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)

_PLACEHOLDER = "\x00console.prepared.{}\x00"  # a key no caller passes: where each key goes in params


class _Compiled:
    __slots__ = ("attnames", "compiler", "converters", "for_update", "params", "slots", "sql")

    def __init__(self, queryset: QuerySet, using: str, keys: int) -> None:
        query = queryset.query
        if query.select_related or query.annotations or query.order_by or query.extra:
            raise ValueError("KeyedRead takes one model's own columns only")
        self.compiler = query.get_compiler(using=using)
        self.sql, params = self.compiler.as_sql()
        self.params = list(params)
        self.slots = [self.params.index(_PLACEHOLDER.format(i)) for i in range(keys)]
        select = self.compiler.select
        self.attnames = [column.target.attname for column, _sql, _alias in select]
        self.converters = self.compiler.get_converters([column for column, _sql, _alias in select])
        self.for_update = query.select_for_update


class KeyedRead(Generic[M]):
    """`build(*keys)` is the queryset; `get(*keys)` is `build(*keys).get()` without the compiling.

    Raises the model's `DoesNotExist` when no row matches, as `.get()` does. Keys that are not
    strings take the ORM's own path (`.get()`), with its conversions and errors.
    """

    def __init__(self, model: type[M], build: Callable[..., QuerySet[M]], keys: int = 1) -> None:
        self._model = model
        self._build = build
        self._keys = keys
        self._local = threading.local()

    def get(self, *keys: str, using: str = DEFAULT_DB_ALIAS) -> M:
        if len(keys) != self._keys:
            raise TypeError(f"KeyedRead.get takes {self._keys} key(s), not {len(keys)}")
        if not all(type(key) is str for key in keys):  # compiled for strings: anything else as the ORM does
            return self._build(*keys).using(using).get()
        compiled = self._compiled(using)
        connection = connections[using]
        if compiled.for_update and connection.features.has_select_for_update and connection.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        params = list(compiled.params)
        for slot, key in zip(compiled.slots, keys, strict=True):
            params[slot] = key
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
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
        return self._model.from_db(using, compiled.attnames, tuple(row))

    def _compiled(self, using: str) -> _Compiled:
        """This thread's compiled form for `using` (a thread's connection is its own)."""
        cache: dict[tuple[str, int], _Compiled] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        connection = connections[using]
        key = (using, id(connection))
        compiled = cache.get(key)
        if compiled is None or compiled.compiler.connection is not connection:
            placeholders = [_PLACEHOLDER.format(i) for i in range(self._keys)]
            compiled = cache[key] = _Compiled(self._build(*placeholders), using, self._keys)
        return compiled

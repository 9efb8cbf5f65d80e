"""Text search over tasks with one meaning on every database.

`q` matches when every whitespace-separated word occurs, case-insensitively, as a substring of the
prompt, the title or the result. Databases disagree on both halves of that: SQLite's LIKE folds
only ASCII letters and PostgreSQL's LIKE folds nothing, while `%` and `_` are wildcards in both.
So both sides are lower-cased the way Python does it (PostgreSQL's LOWER on a UTF-8 database,
a registered function on SQLite), and the word goes through Django's LIKE escaping.
"""

from __future__ import annotations

from django.db.models import Q, TextField
from django.db.models.expressions import Func
from django.db.models.lookups import Contains

SEARCHED_FIELDS = ("input_text", "title", "result")
MAX_WORDS = 10


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


class Folded(Func):
    """LOWER(column), Unicode-aware on SQLite too."""

    function = "LOWER"
    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra):
        connection.ensure_connection()
        raw = connection.connection
        if getattr(connection, "_atc_lower_on", None) is not raw:  # once per (re)opened connection
            raw.create_function("ATC_LOWER", 1, _lower, deterministic=True)
            connection._atc_lower_on = raw
        return super().as_sql(compiler, connection, function="ATC_LOWER", **extra)


def words(q: str) -> list[str]:
    return q.split()[:MAX_WORDS]


def matches(q: str) -> Q:
    """The condition for `q` on a Task queryset (an empty Q when q has no words)."""
    condition = Q()
    for word in words(q):
        needle = word.lower()
        any_field = Q()
        for name in SEARCHED_FIELDS:
            any_field |= Q(Contains(Folded(name), needle))
        condition &= any_field
    return condition

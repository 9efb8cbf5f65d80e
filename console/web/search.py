"""Text search over tasks with one meaning on every database.

`q` matches when every whitespace-separated word occurs, case-insensitively, as a substring of the
prompt, the title or the result. Databases disagree on both halves of that: SQLite's LIKE folds
only ASCII letters and PostgreSQL's LIKE folds nothing, while `%` and `_` are wildcards in both.
So both sides are lower-cased the way Python does it (PostgreSQL's LOWER on a UTF-8 database, a
registered function on SQLite) and the word goes through Django's LIKE escaping.

On SQLite the Python function is only called for text that holds non-ASCII characters (found by a
native GLOB): for pure ASCII text, SQLite's own ASCII-folding LIKE gives the same answer, and for
an ASCII word a native LIKE hit is always a hit of the lower-cased comparison too.
"""

from __future__ import annotations

from django.db.models import BooleanField, F, Func, Q

SEARCHED_FIELDS = ("input_text", "title", "result")
MAX_WORDS = 10
NON_ASCII_GLOB = "*[^\t\n\r -~]*"  # anything but printable ASCII, tab and newlines


def _lower(value: str | None) -> str | None:
    return None if value is None else value.lower()


class HasWord(Func):
    """`word` occurs in the column, case-insensitively (Python's lower-casing on both sides)."""

    output_field = BooleanField()

    def __init__(self, field: str, word: str) -> None:
        super().__init__(F(field))
        self.word = word.lower()

    def _pattern(self, connection) -> str:
        return f"%{connection.ops.prep_for_like_query(self.word)}%"

    def as_sql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        return f"LOWER({column}) LIKE %s", [*params, self._pattern(connection)]

    def as_sqlite(self, compiler, connection, **extra):
        connection.ensure_connection()
        raw = connection.connection
        if getattr(connection, "_atc_lower_on", None) is not raw:  # once per (re)opened connection
            raw.create_function("ATC_LOWER", 1, _lower, deterministic=True)
            connection._atc_lower_on = raw
        column, params = compiler.compile(self.source_expressions[0])
        pattern = self._pattern(connection)
        folded = f"({column} GLOB %s AND ATC_LOWER({column}) LIKE %s ESCAPE '\\')"
        folded_params = [*params, NON_ASCII_GLOB, *params, pattern]
        if not self.word.isascii():  # only text with non-ASCII characters can hold it
            return folded, folded_params
        return f"({column} LIKE %s ESCAPE '\\' OR {folded})", [*params, pattern, *folded_params]


def words(q: str) -> list[str]:
    return q.split()[:MAX_WORDS]


def matches(q: str) -> Q:
    """The condition for `q` on a Task queryset (an empty Q when q has no words)."""
    condition = Q()
    for word in words(q):
        any_field = Q()
        for name in SEARCHED_FIELDS:
            any_field |= Q(HasWord(name, word))
        condition &= any_field
    return condition

"""The console's text search on PostgreSQL: the same meaning, answered from trigram indexes."""

from __future__ import annotations

import pytest
from django.db import connection

from console.web import search
from tasks_app.models import Task

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL only")


@pytest.fixture
def texts(task_of):
    made = [
        task_of("Quarterly REVENUE report for Zürich"),
        task_of("Draft the launch e-mail"),
        task_of("100%_done? check the wildcard"),
    ]
    return [m["id"] for m in made]


def _found(q: str) -> set[str]:
    return set(Task.objects.filter(search.matches(q)).values_list("id", flat=True))


def test_it_keeps_the_meaning_of_q_on_postgres(texts):
    revenue, launch, wild = texts
    assert _found("revenue zÜRICH") == {revenue}  # every word, any case, non-ASCII folded too
    assert _found("aunc mail") == {launch}  # substrings
    assert _found("revenue launch") == set()
    assert _found("100%_") == {wild}  # % and _ are characters, not wildcards
    assert _found("1%0") == set()


def test_it_searches_through_the_trigram_indexes(texts):
    queryset = Task.objects.filter(search.matches("revenue")).order_by()  # the filter alone
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a few rows: make the planner show its options
        plan = queryset.explain()
    for field in search.SEARCHED_FIELDS:
        assert f"task_{field}_trgm" in plan, plan

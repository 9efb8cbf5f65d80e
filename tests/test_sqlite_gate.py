"""SQLite writers of one process take turns (console/sqlite): nobody starves behind a busy writer,
and a write the database still cannot take gets a 503 to retry, never a 500."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import connection, transaction

from console.models import ApiKey
from console.sqlite.base import WRITE_GATE, FairGate
from tasks_app.models import Task
from tests.conftest import create_body

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded default's backend")


def wait_for(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.005)


def test_the_gate_is_handed_to_its_waiters_in_the_order_they_came():
    gate = FairGate()
    assert gate.acquire(1)
    order: list[str] = []

    def waiter(name: str) -> None:
        assert gate.acquire(5)
        order.append(name)
        gate.release()

    threads = []
    for i, name in enumerate(["first", "second", "third"]):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        wait_for(lambda n=i + 1: len(gate._waiters) == n, f"{name} to queue")
    gate.release()
    for t in threads:
        t.join(5)
    assert order == ["first", "second", "third"]
    assert gate.acquire(0)  # open again
    gate.release()


def test_a_turn_that_does_not_come_in_time_is_given_up_and_leaves_the_queue():
    gate = FairGate()
    assert gate.acquire(1)
    assert gate.acquire(0.05) is False
    assert not gate._waiters
    gate.release()
    assert gate.acquire(0)
    gate.release()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_writer_is_not_starved_by_another_that_writes_without_pause(alice):
    """The runtime's group writer commits and begins again at once; a request's write still gets in."""
    stop = threading.Event()
    commits: list[float] = []
    key = ApiKey.objects.filter(membership=alice.member).first()

    def busy_writer() -> None:
        try:
            while not stop.is_set():
                with transaction.atomic():
                    ApiKey.objects.filter(pk=key.pk).update(name="busy")
                    time.sleep(0.002)  # a batch's work, lock held
                commits.append(time.monotonic())
        finally:
            connection.close()

    busy = threading.Thread(target=busy_writer)
    busy.start()
    try:
        wait_for(lambda: len(commits) > 20, "the busy writer to run")
        asked = len(commits)
        with transaction.atomic():
            ApiKey.objects.filter(pk=key.pk).update(name="mine")
        got_in_after = len(commits) - asked
    finally:
        stop.set()
        busy.join(10)
    assert got_in_after <= 2  # one turn: the transaction in progress, perhaps the next one queued
    assert not WRITE_GATE._held and not WRITE_GATE._waiters


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_write_the_database_cannot_take_is_a_503_and_writes_nothing(alice, external_agent, settings):
    """Another process holds SQLite's write lock past the busy timeout: retry later, nothing half-written."""
    settings.API_KEY_CACHE_SECONDS = 0
    before = Task.objects.count()
    options = connection.settings_dict["OPTIONS"]
    old_timeout = options["timeout"]
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        options["timeout"] = 0.2
        connection.close()  # reconnect with the short timeout
        other.execute("BEGIN IMMEDIATE")
        r = alice.post(f"/api/agent-execution/{external_agent.id}", create_body("held out"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        options["timeout"] = old_timeout
        connection.close()
    assert r.status_code == 503, r.content
    assert r["Retry-After"] == "1"
    assert "busy" in r.json()["detail"]
    assert Task.objects.count() == before
    assert alice.post(f"/api/agent-execution/{external_agent.id}", create_body("now")).status_code == 200


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_turn_that_never_came_gets_no_second_timeout_in_sqlite(alice):
    """Waited out at the gate: SQLite's answer comes at once, and the connection's timeout is restored."""
    from django.db import OperationalError

    key = ApiKey.objects.filter(membership=alice.member).first()
    options = connection.settings_dict["OPTIONS"]
    old_timeout = options["timeout"]
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        options["timeout"] = 0.2
        connection.close()
        connection.ensure_connection()
        other.execute("BEGIN IMMEDIATE")  # another process holds SQLite's lock
        assert WRITE_GATE.acquire(1)  # and this process's turn never comes
        try:
            with pytest.raises(OperationalError, match="locked"), transaction.atomic():
                ApiKey.objects.filter(pk=key.pk).update(name="never")
        finally:
            WRITE_GATE.release()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == 200
    finally:
        other.execute("ROLLBACK")
        other.close()
        options["timeout"] = old_timeout
        connection.close()
    assert not WRITE_GATE._held and not WRITE_GATE._waiters


def test_only_a_lock_or_a_lost_connection_is_worth_a_retry():
    from console.errors import transient_database_error

    assert transient_database_error(Exception("database is locked"))
    assert transient_database_error(Exception("connection to server at 127.0.0.1 failed"))
    assert not transient_database_error(Exception("no such table: tasks_app_task"))
    assert not transient_database_error(Exception("disk I/O error"))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the very case
def test_a_forked_child_starts_with_an_open_gate():
    """A turn held by another thread of the parent is never given back in a child (it has only the
    forking thread): the child's gate is reset at fork, so its first write does not wait it out."""
    import os

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        assert WRITE_GATE.acquire(1)
        held.set()
        release.wait(10)
        WRITE_GATE.release()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit at once with what it found, running nothing of pytest's
            took = WRITE_GATE.acquire(0.5)
            os._exit(0 if took else 3)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join(5)
    assert os.waitstatus_to_exitcode(status) == 0
    assert WRITE_GATE.acquire(1)  # the parent's own gate was left as it was, and is free again
    WRITE_GATE.release()

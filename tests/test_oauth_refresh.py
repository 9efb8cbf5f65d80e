"""Connections refresh before they expire, rotate their refresh tokens, and after failures ask for a
new sign-in; against the real authorization server of tests/tools/oauth_server.py."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from console import crypto, oauth, vault
from console.models import GraphItem, Organization, UserToken
from console.oauth_models import OAuthClient
from tests.test_oauth_signin import REDIRECT, oauth_item, owner, sign_in
from tests.tools.oauth_server import OAuthMCP


@pytest.fixture
def server() -> Iterator[OAuthMCP]:
    with OAuthMCP() as running:
        yield running


@pytest.fixture
def connected(server, alice) -> UserToken:
    item = oauth_item(alice.org, server.mcp_url)
    return oauth.finish(sign_in(server, alice, item)[1], "sess-1")[1]


def expire(row: UserToken, server: OAuthMCP, seconds: float = 5) -> None:
    """Due for a refresh: it expires within OAUTH_REFRESH_MARGIN_SECONDS (60)."""
    server.provider.expire_all()
    UserToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(seconds=seconds))


def test_it_refreshes_a_token_about_to_expire_and_stores_the_rotated_refresh_token(server, alice, connected):
    old_access, old_refresh = connected.reveal(), connected.reveal_refresh()
    expire(connected, server)
    tokens = vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"])
    row = UserToken.objects.get()
    assert tokens == {"gi-oauth": row.reveal()} and row.reveal() != old_access
    assert (
        row.reveal_refresh() != old_refresh and row.refreshed_at is not None and row.last_used_at is not None
    )
    assert server.provider.refreshes == 1 and row.reveal() in server.provider.access
    assert row.expires_at > timezone.now() + timedelta(seconds=3000)
    assert vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"]) == tokens  # fresh: no second refresh
    assert server.provider.refreshes == 1


def test_it_refreshes_once_after_a_401_only_if_the_rejected_token_is_still_stored(server, alice, connected):
    rejected = connected.reveal()
    server.provider.expire_all()
    row = oauth.refresh(connected.pk, rejected_token=rejected)
    assert row.reveal() != rejected and server.provider.refreshes == 1
    again = oauth.refresh(connected.pk, rejected_token=rejected)  # another task saw the same 401
    assert again.reveal() == row.reveal() and server.provider.refreshes == 1


def test_an_expired_refresh_token_marks_the_connection_as_needing_sign_in(server, alice, connected):
    server.fail_refresh = True
    expire(connected, server)
    assert vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"]) == {}
    row = UserToken.objects.get()
    assert row.needs_signin and "invalid_grant" in row.refresh_error and row.refresh_failures == 1
    assert vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"]) == {}
    assert server.provider.refreshes == 1  # no retry loop against the authorization server


def test_an_unreachable_authorization_server_is_retried_then_needs_sign_in(server, alice, connected):
    expire(connected, server)
    moved = "http://127.0.0.2:9"  # the authorization server moved to a host the guard refuses
    UserToken.objects.update(issuer=moved)
    OAuthClient.objects.update(issuer=moved)
    for attempt in range(1, oauth.MAX_REFRESH_FAILURES + 1):
        UserToken.objects.update(expires_at=timezone.now() + timedelta(seconds=5))
        oauth.refresh(connected.pk)
        row = UserToken.objects.get()
        assert row.refresh_failures == attempt and "OUTBOUND_ALLOWLIST" in row.refresh_error
    assert row.needs_signin


def test_a_new_sign_in_clears_the_failure(server, alice, connected):
    server.fail_refresh = True
    expire(connected, server)
    vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"])
    server.fail_refresh = False
    item = connected.organization.agents.get().graph_items.get()
    url = oauth.start(
        organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=REDIRECT, session_key="s"
    )
    from tests.test_oauth_signin import callback_params

    oauth.finish(callback_params(server.approve(url)), "s")
    row = UserToken.objects.get()
    assert not row.needs_signin and row.refresh_error == "" and row.refresh_failures == 0


def test_refresh_tokens_client_secrets_and_verifiers_rotate_with_the_key_list(
    server, alice, connected, settings
):
    from cryptography.fernet import Fernet

    columns = {(m.__name__, f) for m, f in crypto.encrypted_columns()}
    assert {
        ("UserToken", "refresh_token_encrypted"),
        ("OAuthClient", "client_secret_encrypted"),
        ("OAuthFlow", "code_verifier_encrypted"),
        ("OAuthFlow", "client_secret_encrypted"),
    } <= columns
    refresh_token = connected.reveal_refresh()
    new = Fernet.generate_key().decode()
    counts = crypto.rotate([new, *settings.FIELD_ENCRYPTION_KEYS])
    assert counts["UserToken.refresh_token_encrypted"] == 1
    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key is gone: the rotated rows still read
    crypto._fernet.cache_clear()
    try:
        assert UserToken.objects.get().reveal_refresh() == refresh_token
    finally:
        crypto._fernet.cache_clear()


class Refreshing:
    """`oauth.refresh` of a due connection in a thread of its own, held at the authorization server
    (its refresh_gate closed) until `release()`: what other writers meet while a refresh waits."""

    def __init__(
        self, server: OAuthMCP, row: UserToken, read: Callable[[], Any] | None = None, expires_in: float = 5
    ) -> None:
        """`read`: what the thread does instead of `oauth.refresh(row.pk)` (a task's vault read)."""
        self.server, self.outcome = server, {}
        server.provider.refresh_gate.clear()
        expire(row, server, expires_in)
        self.thread = threading.Thread(
            target=self._run, args=(read or functools.partial(oauth.refresh, row.pk),)
        )
        self.thread.start()
        assert server.provider.refresh_started.wait(30), "the refresh never reached the server"

    def _run(self, read: Callable[[], Any]) -> None:
        try:
            self.outcome["row"] = read()
        except BaseException as exc:  # reported by release()
            self.outcome["error"] = exc
        finally:
            connection.close()

    def release(self) -> UserToken | None:
        self.server.provider.refresh_gate.set()
        self.thread.join(30)
        assert not self.thread.is_alive() and "error" not in self.outcome, self.outcome
        return self.outcome["row"]


@pytest.mark.django_db(transaction=True)
def test_a_refresh_waiting_for_the_authorization_server_holds_no_database_lock(server, alice, connected):
    refreshing = Refreshing(server, connected)
    try:  # other tasks' writes go on meanwhile (on SQLite they waited for it, and failed after 5 s)
        with transaction.atomic():
            Organization.objects.create(name="Written meanwhile")
    finally:
        row = refreshing.release()
    assert row.reveal() != connected.reveal() and server.provider.refreshes == 1
    assert UserToken.objects.get().reveal() == row.reveal()


@pytest.mark.django_db(transaction=True)
def test_two_tasks_refreshing_at_once_make_one_refresh_and_read_the_same_token(server, alice, connected):
    refreshing = Refreshing(server, connected)
    second: dict[str, object] = {}

    def refresh_too() -> None:
        try:
            second["row"] = oauth.refresh(connected.pk)
        except BaseException as exc:
            second["error"] = exc
        finally:
            connection.close()

    waiter = threading.Thread(target=refresh_too)
    waiter.start()
    # Give the second a chance to reach the server: without the turn it would (a second refresh
    # with the same refresh token); with it, it waits. Passing never depends on this window.
    for _ in range(100):
        if server.provider.refreshes > 1 or not waiter.is_alive():
            break
        time.sleep(0.01)
    first = refreshing.release()
    waiter.join(30)
    assert not waiter.is_alive() and "error" not in second, second
    assert second["row"].reveal() == first.reveal() != connected.reveal()
    assert server.provider.refreshes == 1


# Under SQLite's file lock a sign-in, a disconnect or a task's tokens can land while a refresh
# waits; under a row lock (PostgreSQL) they wait for the refresh instead.
sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's refresh turn")


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_sign_in_during_a_refresh_wins(server, alice, connected):
    refreshing = Refreshing(server, connected)
    item = GraphItem.objects.get(key="gi-oauth")
    _, signed_in = oauth.finish(sign_in(server, alice, item, session="sess-2")[1], "sess-2")
    row = refreshing.release()
    assert server.provider.refreshes == 1  # the refresh happened, and its tokens were not kept
    stored = UserToken.objects.get()
    assert row.reveal() == signed_in.reveal() == stored.reveal()
    assert stored.reveal_refresh() == signed_in.reveal_refresh() != connected.reveal_refresh()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_tokens_a_task_brings_during_a_refresh_keep_the_rotated_refresh_token(server, alice, connected):
    refreshing = Refreshing(server, connected)
    vault.store(alice.org.id, owner(alice), "gi-oauth", "brought-by-a-task")
    row = refreshing.release()
    stored = UserToken.objects.get()
    assert stored.reveal_refresh() != connected.reveal_refresh()  # the old one is spent at the server
    assert stored.reveal() == row.reveal() in server.provider.access


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_disconnect_during_a_refresh_is_not_undone(server, alice, connected):
    refreshing = Refreshing(server, connected)
    UserToken.objects.filter(pk=connected.pk).delete()
    assert refreshing.release() is None
    assert not UserToken.objects.exists()  # the refresh wrote nothing back


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_task_reading_the_vault_during_a_refresh_gets_nothing_of_a_connection_disconnected_meanwhile(
    server, alice, connected
):
    """The run's load asks the vault while the connection refreshes; its user disconnects meanwhile:
    the run gets no token for it (it used to fall back to the row read before the refresh)."""
    read = lambda: vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"])  # noqa: E731
    # Due, but still valid for the whole test: the old code's stale row would not have expired.
    refreshing = Refreshing(server, connected, read=read, expires_in=50)
    UserToken.objects.filter(pk=connected.pk).delete()
    assert refreshing.release() == {}


def test_a_read_that_must_not_refresh_leaves_a_due_connection_to_the_run(server, alice, connected):
    """A create reads its run's tokens on its own thread, but never waits there for an OAuth server:
    a connection due for a refresh makes it leave the whole read to the run, which refreshes."""
    from tasks_app.models import Task
    from tasks_app.runtime import runner

    agent = connected_agent(connected)
    task = Task.objects.create(
        organization=alice.org, agent=agent, vault_member_id=alice.member.pk, status="executing"
    )
    loaded = runner.preload(task)
    assert loaded is not None and loaded[4] == {"gi-oauth": connected.reveal()}
    assert [i.key for i in loaded[2]] == ["gi-oauth"] and loaded[0] is task
    expire(connected, server)
    with pytest.raises(vault.RefreshDue):
        vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"], refresh=False)
    assert runner.preload(task) is None
    assert server.provider.refreshes == 0  # not refreshed by the create's read
    assert vault.tokens_for(alice.org.id, owner(alice), ["gi-oauth"]) != {"gi-oauth": connected.reveal()}
    assert server.provider.refreshes == 1  # the run's own read refreshes it


def connected_agent(row: UserToken):
    return GraphItem.objects.get(key=row.graph_item_key).agent

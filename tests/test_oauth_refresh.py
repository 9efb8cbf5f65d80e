"""Connections refresh before they expire, rotate their refresh tokens, and after failures ask for a
new sign-in; against the real authorization server of tests/tools/oauth_server.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from console import oauth, vault
from console.models import UserToken
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


def expire(row: UserToken, server: OAuthMCP) -> None:
    server.provider.expire_all()
    UserToken.objects.filter(pk=row.pk).update(expires_at=timezone.now() + timedelta(seconds=5))


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

    from console import crypto

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

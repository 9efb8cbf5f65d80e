"""/connections/: sign in through the console (session-bound), paste a validated token, refresh,
disconnect, the admins' board and revoke, and signed sign-in links for end users; against the real
authorization server + MCP server of tests/tools/oauth_server.py and the token MCP server."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from console import oauth, vault
from console.models import UserToken
from tests.console_helpers import signed_in
from tests.test_oauth_signin import oauth_item
from tests.tools.oauth_server import OAuthMCP


@pytest.fixture
def server() -> Iterator[OAuthMCP]:
    with OAuthMCP() as running:
        yield running


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def authorize_url(response) -> str:
    """Where the page after a sign-in POST goes on to (a link and a refresh: CSP form-action 'self')."""
    assert response.status_code == 200, response.content
    found = re.search(r'id="continue" href="([^"]+)"', response.content.decode())
    assert found, response.content
    return html.unescape(found.group(1))


def sign_in_through_console(client, server: OAuthMCP, item, user: str = "alice"):
    url = authorize_url(client.post(f"/connections/{item.pk}/signin/"))
    assert url.startswith(server.issuer + "/authorize?")
    return client.get(local(server.approve(url, user)))


def test_it_lists_the_servers_and_signs_a_member_in_through_the_console(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    browser = signed_in(alice)
    first = browser.get("/connections/").content.decode()
    assert "not connected" in first
    assert '<button type="submit" class="primary">Sign in</button>' in first and "Sign in again" not in first
    done = sign_in_through_console(browser, server, item)
    assert done.status_code == 302 and done["Location"] == "/connections/"
    row = UserToken.objects.get(member=alice.member)
    assert server.provider.access[row.reveal()].subject == "alice"
    page = browser.get("/connections/").content.decode()
    assert f"…{row.last4}" in page and row.reveal() not in page and "connected" in page
    # connected: signing in again is offered, no longer as the page's main action
    assert '<button type="submit">Sign in again</button>' in page and 'class="primary">Sign in<' not in page


def test_a_callback_in_another_members_session_is_refused(server, alice, bob):
    item = oauth_item(alice.org, server.mcp_url)
    started = signed_in(alice).post(f"/connections/{item.pk}/signin/")
    callback = local(server.approve(authorize_url(started)))
    r = signed_in(bob).get(callback)
    assert r.status_code == 400 and "someone else" in r.content.decode()
    assert not UserToken.objects.exists()


def test_a_forged_state_gets_a_clear_400_page(alice):
    r = signed_in(alice).get("/connections/callback/?code=x&state=forged")
    assert r.status_code == 400 and "not valid" in r.content.decode()


def test_another_organizations_server_is_a_404(server, alice, charlie):
    item = oauth_item(alice.org, server.mcp_url)
    browser = signed_in(charlie)
    for action in ("signin", "paste", "refresh", "disconnect"):
        assert browser.post(f"/connections/{item.pk}/{action}/", {"token": "x"}).status_code == 404


def test_a_pasted_token_is_trimmed_and_checked_against_the_server(alice, mcp_server):
    item = oauth_item(alice.org, mcp_server.url, auth_type="api_key")
    browser = signed_in(alice)
    browser.post(f"/connections/{item.pk}/paste/", {"token": "tok-wrong"})
    browser.post(f"/connections/{item.pk}/paste/", {"token": "tok-\nalice"})
    assert not UserToken.objects.exists()
    r = browser.post(f"/connections/{item.pk}/paste/", {"token": "  tok-alice\n"}, follow=True)
    assert "stored" in r.content.decode()
    row = UserToken.objects.get()
    assert row.reveal() == "tok-alice" and row.source == "pasted" and row.member_id == alice.member.pk


def test_admins_see_everyones_state_without_tokens_and_can_revoke(server, alice, bob):
    item = oauth_item(alice.org, server.mcp_url)
    sign_in_through_console(signed_in(bob), server, item, "bob")
    row = UserToken.objects.get(member=bob.member)
    board = signed_in(alice).get("/connections/").content.decode()
    assert "bob@example.com" in board and row.reveal() not in board and row.reveal_refresh() not in board
    assert "Everyone's connections" not in signed_in(bob).get("/connections/").content.decode()
    assert signed_in(bob).post(f"/connections/revoke/{row.pk}/").status_code == 403
    assert signed_in(alice).post(f"/connections/revoke/{row.pk}/").status_code == 302
    assert not UserToken.objects.exists()


def test_refresh_now_and_disconnect(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    browser = signed_in(alice)
    sign_in_through_console(browser, server, item)
    before = UserToken.objects.get().reveal()
    browser.post(f"/connections/{item.pk}/refresh/")
    assert UserToken.objects.get().reveal() != before and server.provider.refreshes == 1
    browser.post(f"/connections/{item.pk}/disconnect/")
    assert not UserToken.objects.exists()


def test_an_end_user_signs_in_with_a_single_use_signed_link(server, alice, client):
    item = oauth_item(alice.org, server.mcp_url)
    end_user = vault.Owner(external_id="end-user-7")
    link = local(oauth.signin_link(alice.org.id, end_user, item, "http://testserver"))
    assert client.get(link).status_code == 200
    started = client.post(link)
    done = client.get(local(server.approve(authorize_url(started), "eve")))
    assert done.status_code == 200 and "Connected to Tools" in done.content.decode()
    row = UserToken.objects.get()
    assert row.external_user_id == "end-user-7" and row.member_id is None
    again = client.post(link)
    assert again.status_code == 400 and "already used" in again.content.decode()


def test_a_tampered_link_and_another_members_link_are_refused(server, alice, bob):
    item = oauth_item(alice.org, server.mcp_url)
    link = local(
        oauth.signin_link(alice.org.id, vault.Owner(member_id=alice.member.pk), item, "http://testserver")
    )
    assert signed_in(bob).get(link).status_code == 403
    assert signed_in(alice).get(link).status_code == 200
    assert signed_in(alice).get(link[:-3] + "xx/").status_code == 400


def test_new_task_says_which_servers_are_not_connected_before_the_task_exists(alice, mcp_server):
    item = oauth_item(alice.org, mcp_server.url, auth_type="api_key")
    browser = signed_in(alice)
    page = browser.get("/tasks/new/").content.decode()
    assert "Connect before you start" in page and f'data-agent="{item.agent_id}"' in page and "Tools" in page
    browser.post(f"/connections/{item.pk}/paste/", {"token": "tok-alice"})
    assert "Connect before you start" not in browser.get("/tasks/new/").content.decode()

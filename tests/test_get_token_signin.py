"""The SDK's get_token loop (xpander-wire.md section 6) with a real sign-in: `generate_login_url=true`
answers login_required with a signed link, polling answers login_required until the end user signs
in through that link without a console session, then token_ready."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.test import Client

from console.models import McpTokenAccess, UserToken
from tests.test_connections_page import authorize_url
from tests.test_oauth_signin import oauth_item
from tests.tools.oauth_server import OAuthMCP


@pytest.fixture
def server() -> Iterator[OAuthMCP]:
    with OAuthMCP() as running:
        yield running


def details(url: str) -> dict:
    return {"id": None, "name": "Tools", "url": url, "transport": "streamable-http", "auth_type": "oauth2"}


def test_an_end_user_signs_in_from_the_login_url_while_the_sdk_polls(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    route = f"/api/mcp_auth/{item.agent_id}/u-9/get_token"
    first = alice.post(f"{route}?generate_login_url=true", details(server.mcp_url)).json()
    assert first["type"] == "login_required" and first["data"]["server_name"] == "Tools"
    link = first["data"]["url"]
    assert link.startswith("http://testserver/connections/signin/")
    waiting = alice.post(f"{route}?generate_login_url=false", details(server.mcp_url)).json()
    assert waiting["type"] == "login_required"

    browser = Client()  # the end user: no console session
    path = urlsplit(link).path
    started = browser.post(path)
    callback = urlsplit(server.approve(authorize_url(started), "eve"))
    assert browser.get(f"{callback.path}?{callback.query}").status_code == 200

    ready = alice.post(f"{route}?generate_login_url=false", details(server.mcp_url)).json()
    assert ready["type"] == "token_ready"
    assert ready["data"]["access_token"] == UserToken.objects.get(external_user_id="u-9").reveal()
    assert server.provider.access[ready["data"]["access_token"]].subject == "eve"
    outcomes = list(McpTokenAccess.objects.order_by("id").values_list("outcome", flat=True))
    assert outcomes == ["login_required", "login_required", "token_ready"]


def test_a_member_key_gets_no_link_for_another_user(server, alice, bob):
    item = oauth_item(alice.org, server.mcp_url)
    r = bob.post(
        f"/api/mcp_auth/{item.agent_id}/u-9/get_token?generate_login_url=true", details(server.mcp_url)
    )
    assert r.json()["type"] == "token_issue" and "url" not in r.json()["data"]


def test_a_server_without_discoverable_sign_in_is_a_token_issue(alice, mcp_server):
    item = oauth_item(alice.org, mcp_server.url)
    r = alice.post(
        f"/api/mcp_auth/{item.agent_id}/u-9/get_token?generate_login_url=true", details(mcp_server.url)
    )
    assert r.json()["type"] == "token_issue"

"""A 403 insufficient_scope pauses the task for a new sign-in asking for the larger scope (step-up),
and a connection that already has every scope on offer is not asked again (no endless loop)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from mcp.shared.auth import OAuthClientInformationFull

from console import oauth
from console.models import GraphItem, UserToken
from console.oauth_models import OAuthClient
from tasks_app.actions import signin as actions_signin
from tests import test_signin_pause
from tests.conftest import create_body
from tests.test_oauth_signin import REDIRECT, callback_params, owner
from tests.test_signin_pause import events, run
from tests.tools.oauth_server import OAuthMCP
from tests.tools.scripted_model import Turn

agent = test_signin_pause.agent  # the built-in agent on this module's server


@pytest.fixture
def server() -> Iterator[OAuthMCP]:
    with OAuthMCP(scopes=("tools", "admin")) as running:
        yield running


def narrow_grant(server: OAuthMCP, alice, scopes: list[str]) -> UserToken:
    """A connection from an earlier sign-in that was granted only `scopes`."""
    server.provider.clients["early"] = OAuthClientInformationFull(
        client_id="early", redirect_uris=[REDIRECT], token_endpoint_auth_method="none", scope="tools admin"
    )
    OAuthClient.objects.create(
        organization=alice.org,
        issuer=server.issuer,
        client_id="early",
        redirect_uri=REDIRECT,
        method="dynamic",
    )
    token = server.provider._issue("early", scopes, server.mcp_url, "alice")
    return oauth.save_token(
        alice.org.id,
        owner(alice),
        "gi-oauth",
        token,
        source="oauth",
        issuer=server.issuer,
        resource=server.mcp_url,
        client_id="early",
    )


def test_insufficient_scope_pauses_for_a_sign_in_with_the_larger_scope_then_carries_on(
    alice,
    agent,
    server,
    scripted_model,
):
    narrow_grant(server, alice, ["tools"])
    scripted_model.set_script([Turn.tool("whoami", {}), Turn.reply("Done.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    assert run(task["id"]).status == "paused" and scripted_model.requests == []
    auth = [d for t, d in events(task["id"]) if t == "auth_event"][-1]
    assert auth["type"] == "login_required" and "more access" in auth["data"]["message"]

    link = oauth.open_link(urlsplit(auth["data"]["url"]).path.rstrip("/").rsplit("/", 1)[-1])
    url = oauth.start(
        organization_id=alice.org.id,
        owner=link.owner,
        item=link.item,
        redirect_uri=REDIRECT,
        session_key="s",
        link_nonce=link.nonce,
        step_up_scope=link.step_up_scope,
    )
    assert parse_qs(urlsplit(url).query)["scope"] == ["tools admin"]
    oauth.finish(callback_params(server.approve(url)), "s")
    assert UserToken.objects.get().scopes == "tools admin"
    actions_signin.resume_signed_in(alice.org.id, owner(alice), "gi-oauth")
    assert run(task["id"], "w2").status == "completed" and server.calls == [("whoami", "alice")]


def test_a_connection_with_every_scope_on_offer_is_not_asked_again(alice, agent, server, scripted_model):
    row = narrow_grant(server, alice, ["tools"])
    UserToken.objects.filter(pk=row.pk).update(scopes="tools admin")  # granted all, yet still refused
    scripted_model.set_script([Turn.reply("Without tools.")])
    task = alice.post(f"/api/agent-execution/{agent.id}", create_body("go")).json()
    assert run(task["id"]).status == "completed"
    auth = [d for t, d in events(task["id"]) if t == "auth_event"][-1]
    assert auth["type"] == "token_issue" and "HTTP 403" in auth["data"]["message"]
    assert GraphItem.objects.count() == 1

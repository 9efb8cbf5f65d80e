"""Signing a person in to an MCP server the MCP authorization specification's way, against a real
authorization server and MCP server on loopback (tests/tools/oauth_server.py): discovery,
registration, PKCE S256, `resource`, `state`, `iss`, token exchange, and what each attack stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from console import crypto, oauth, vault
from console.models import Agent, GraphItem, UserToken
from console.oauth_models import OAuthClient, OAuthFlow
from tests.tools.oauth_server import OAuthMCP

REDIRECT = "http://testserver/connections/callback/"


@pytest.fixture
def server() -> Iterator[OAuthMCP]:
    with OAuthMCP() as running:
        yield running


def oauth_item(org, url: str, key: str = "gi-oauth", **mcp) -> GraphItem:
    agent, _ = Agent.objects.get_or_create(
        organization=org, unique_name="oauth-agent", defaults={"name": "OAuth"}
    )
    settings = {"mcp_settings": {"url": url, "name": "Tools", "auth_type": "oauth2", **mcp}}
    return GraphItem.objects.create(agent=agent, key=key, type="mcp", settings=settings)


def owner(persona) -> vault.Owner:
    return vault.Owner(member_id=persona.member.pk)


def callback_params(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def sign_in(server: OAuthMCP, persona, item: GraphItem, session: str = "sess-1", user: str = "alice"):
    url = oauth.start(
        organization_id=persona.org.id,
        owner=owner(persona),
        item=item,
        redirect_uri=REDIRECT,
        session_key=session,
    )
    return url, callback_params(server.approve(url, user))


def test_it_signs_a_member_in_with_pkce_s256_resource_and_a_registered_client(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    url, params = sign_in(server, alice, item)
    query = callback_params(url)
    assert query["code_challenge_method"] == "S256" and query["resource"] == server.mcp_url
    assert query["scope"] == "tools" and query["redirect_uri"] == REDIRECT
    _, row = oauth.finish(params, "sess-1")
    assert row.source == "oauth" and row.member_id == alice.member.pk and row.resource == server.mcp_url
    assert row.issuer == server.issuer and row.refresh_token_encrypted and row.expires_at is not None
    assert server.provider.access[row.reveal()].subject == "alice"
    client = OAuthClient.objects.get(organization=alice.org)
    assert client.method == "dynamic" and client.client_id == query["client_id"]
    assert vault.tokens_for(alice.org.id, owner(alice), [item.key]) == {item.key: row.reveal()}
    assert row.reveal() not in json.dumps(
        list(OAuthFlow.objects.values("scopes", "resource", "server_metadata"))
    )


def test_it_registers_once_per_organization_and_authorization_server(server, alice, bob):
    item = oauth_item(alice.org, server.mcp_url)
    oauth.finish(sign_in(server, alice, item)[1], "sess-1")
    oauth.finish(sign_in(server, bob, item, session="sess-2", user="bob")[1], "sess-2")
    assert server.provider.registrations == 1 and OAuthClient.objects.count() == 1
    rows = {r.member_id: r.reveal() for r in UserToken.objects.all()}
    assert {server.provider.access[t].subject for t in rows.values()} == {"alice", "bob"}


def test_it_uses_a_client_pre_registered_on_the_graph_item(server, alice):
    server.dcr = False
    from mcp.shared.auth import OAuthClientInformationFull

    server.provider.clients["pre-1"] = OAuthClientInformationFull(
        client_id="pre-1",
        redirect_uris=[REDIRECT],
        token_endpoint_auth_method="none",
        grant_types=oauth.GRANT_TYPES,
        scope="tools",
    )
    item = oauth_item(alice.org, server.mcp_url, client_id="pre-1")
    url, params = sign_in(server, alice, item)
    assert callback_params(url)["client_id"] == "pre-1"
    oauth.finish(params, "sess-1")
    assert OAuthClient.objects.get().method == "pre_registered" and server.provider.registrations == 0


def test_it_tells_an_admin_what_to_enter_when_nothing_can_register(server, alice):
    server.dcr = False
    item = oauth_item(alice.org, server.mcp_url)
    with pytest.raises(oauth.SignInError) as refused:
        oauth.start(organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=REDIRECT)
    assert refused.value.status == 409 and REDIRECT in refused.value.message
    assert not OAuthFlow.objects.exists()


def test_it_refuses_an_authorization_server_without_s256(server, alice):
    server.s256 = False
    item = oauth_item(alice.org, server.mcp_url)
    with pytest.raises(oauth.SignInError, match="PKCE S256"):
        oauth.start(organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=REDIRECT)
    assert not OAuthFlow.objects.exists() and not OAuthClient.objects.exists()


def test_it_refuses_metadata_pointing_to_a_host_the_operator_did_not_allow(server, alice, settings):
    item = oauth_item(alice.org, server.mcp_url.replace("127.0.0.1", "127.0.0.2"))
    with pytest.raises(oauth.SignInError, match="OUTBOUND_ALLOWLIST"):
        oauth.start(organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=REDIRECT)
    assert not OAuthFlow.objects.exists()


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda p: {**p, "state": "forged-state"}, "not valid"),
        (lambda p: {k: v for k, v in p.items() if k != "state"}, "no state"),
        (lambda p: {**p, "iss": "http://127.0.0.1:1"}, "iss mismatch"),
        (lambda p: {k: v for k, v in p.items() if k != "iss"}, "iss mismatch"),
        (lambda p: {"state": p["state"], "error": "access_denied"}, "refused the sign-in: access_denied"),
        (lambda p: {**p, "code": "code_forged"}, "refused the token request"),
    ],
)
def test_it_refuses_a_bad_callback_and_stores_nothing(server, alice, tamper, message):
    item = oauth_item(alice.org, server.mcp_url)
    _, params = sign_in(server, alice, item)
    with pytest.raises(oauth.SignInError, match=message) as refused:
        oauth.finish(tamper(params), "sess-1")
    assert refused.value.status in (400, 502)
    assert not UserToken.objects.exists()


def test_it_answers_a_replayed_callback_400_and_keeps_the_first_connection(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    _, params = sign_in(server, alice, item)
    _, row = oauth.finish(params, "sess-1")
    with pytest.raises(oauth.SignInError, match="already used") as refused:
        oauth.finish(params, "sess-1")
    assert refused.value.status == 400 and UserToken.objects.get().reveal() == row.reveal()


def test_it_refuses_an_expired_state(server, alice, settings):
    settings.SIGNIN_FLOW_SECONDS = 0
    item = oauth_item(alice.org, server.mcp_url)
    _, params = sign_in(server, alice, item)
    with pytest.raises(oauth.SignInError, match="expired"):
        oauth.finish(params, "sess-1")
    assert not UserToken.objects.exists()


def test_it_refuses_a_callback_for_another_members_flow(server, alice, bob):
    item = oauth_item(alice.org, server.mcp_url)
    _, params = sign_in(server, alice, item, session="alices-session")
    with pytest.raises(oauth.SignInError, match="someone else"):
        oauth.finish(params, "bobs-session")
    assert not UserToken.objects.exists()


def test_it_refuses_a_token_issued_for_another_resource(server, alice):
    server.wrong_resource = True
    item = oauth_item(alice.org, server.mcp_url)
    _, params = sign_in(server, alice, item)
    with pytest.raises(oauth.SignInError, match="another resource"):
        oauth.finish(params, "sess-1")
    assert not UserToken.objects.exists()


def test_two_tabs_signing_in_at_once_each_finish_with_one_connection(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    first_url = oauth.start(
        organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=REDIRECT, session_key="s"
    )
    second_url = oauth.start(
        organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=REDIRECT, session_key="s"
    )
    first, second = callback_params(server.approve(first_url)), callback_params(server.approve(second_url))
    oauth.finish(second, "s")
    _, row = oauth.finish(first, "s")
    assert UserToken.objects.count() == 1 and UserToken.objects.get().reveal() == row.reveal()
    assert server.provider.registrations == 1


def test_it_keeps_refresh_and_client_secrets_encrypted_at_rest(server, alice):
    item = oauth_item(alice.org, server.mcp_url)
    _, row = oauth.finish(sign_in(server, alice, item)[1], "sess-1")
    stored = UserToken.objects.values_list("token_encrypted", "refresh_token_encrypted").get()
    assert row.reveal() not in stored and row.reveal_refresh() not in stored
    assert crypto.decrypt(stored[1]).startswith("rt_")


def test_it_uses_a_client_id_metadata_document_when_the_server_supports_it(server, alice, settings):
    """The document URL must be HTTPS: PUBLIC_URL says so; the authorization server fetches the
    document through Django's test client (a real HTTPS fetch would need a certificate; see the note)."""
    from django.test import Client

    settings.PUBLIC_URL = "https://testserver"
    server.cimd = True
    server.provider.fetch_document = lambda url: Client().get(urlsplit(url).path, secure=True).json()
    redirect = "https://testserver/connections/callback/"
    item = oauth_item(alice.org, server.mcp_url)
    url = oauth.start(
        organization_id=alice.org.id, owner=owner(alice), item=item, redirect_uri=redirect, session_key="s"
    )
    document_url = "https://testserver/connections/client-metadata.json"
    assert callback_params(url)["client_id"] == document_url
    _, row = oauth.finish(callback_params(server.approve(url)), "s")
    assert server.provider.documents_fetched and server.provider.registrations == 0
    assert OAuthClient.objects.get().method == "metadata_document" and row.client_id == document_url


def test_old_sign_in_states_are_forgotten_once_no_link_can_name_them(server, alice, settings):
    item = oauth_item(alice.org, server.mcp_url)
    sign_in(server, alice, item)
    assert oauth.forget_old_flows() == 0
    settings.SIGNIN_WAIT_SECONDS, settings.SIGNIN_FLOW_SECONDS = 0, 0
    assert oauth.forget_old_flows() == 1 and not OAuthFlow.objects.exists()

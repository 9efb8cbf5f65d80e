"""Signing a person in to an MCP server the MCP authorization specification's way, and refreshing it.

Server side and multi-user: the `mcp` package's client helpers do the parsing (WWW-Authenticate,
discovery URL lists, metadata models, registration request and response, `iss` check); this module
keeps what they leave to a single-user client: where the flow state lives (an OAuthFlow row bound to
the session or the signed link), which owner the tokens belong to, one registration per
(organization, authorization server), and refreshes under a database row lock so many tasks in
many processes cause one refresh request.

Every request goes through the outbound guard (OUTBOUND_ALLOWLIST applies to metadata URLs too).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core import signing
from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone
from mcp.client.auth import OAuthFlowError, OAuthRegistrationError
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_client_registration_request,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
    get_client_metadata_scopes,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    handle_registration_response,
    issuers_match,
    union_scopes,
    validate_authorization_response_iss,
)
from mcp.shared.auth import OAuthClientMetadata, OAuthMetadata, OAuthToken
from pydantic import ValidationError

from console import crypto, outbound, vault
from console.models import GraphItem, UserToken
from console.oauth_models import OAuthClient, OAuthFlow, RegistrationMethod, hash_state
from console.vault import Owner

GRANT_TYPES = ["authorization_code", "refresh_token"]
CALLBACK_PATH = "/connections/callback/"
METADATA_DOCUMENT_PATH = "/connections/client-metadata.json"
MAX_REFRESH_FAILURES = 3
_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "console", "version": "1"},
    },
}
_MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class SignInError(Exception):
    """A sign-in that cannot go on; the message is safe to show and says what to do."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Discovery:
    """What the MCP server and its authorization server published about signing in."""

    resource: str
    scopes: str | None
    metadata: OAuthMetadata


def _client(**kwargs: Any) -> httpx2.AsyncClient:
    return outbound.client(timeout=httpx2.Timeout(15.0), follow_redirects=False, **kwargs)


def _refusal(exc: Exception, what: str) -> SignInError:
    refused = outbound.refusal_in(exc)
    return SignInError(
        f"{what}: {refused}" if refused else f"{what} is unreachable ({type(exc).__name__})", 502
    )


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def public_url(request_base: str = "") -> str:
    """Where people reach the console: PUBLIC_URL, else the request's own scheme and host."""
    return (settings.PUBLIC_URL or request_base).rstrip("/")


async def discover(server_url: str, challenge_scope: str | None = None) -> Discovery:
    """RFC 9728 then RFC 8414 / OpenID discovery from an MCP server's URL; refuses servers without S256."""
    try:
        async with _client() as http:
            probe = await http.post(server_url, json=_INITIALIZE, headers=_MCP_HEADERS)
            www_url = extract_resource_metadata_from_www_auth(probe)
            scope = challenge_scope or (
                extract_scope_from_www_auth(probe) if probe.status_code in (401, 403) else None
            )
            resource_metadata = None
            for url in build_protected_resource_metadata_discovery_urls(www_url, server_url):
                resource_metadata = await handle_protected_resource_response(await http.get(url))
                if resource_metadata is not None:
                    break
            if resource_metadata is None:
                raise SignInError(
                    f"{server_url} publishes no OAuth protected resource metadata (RFC 9728): its sign-in "
                    "cannot be discovered; paste a token instead"
                )
            resource = str(resource_metadata.resource).rstrip("/")
            if not _covers(resource, server_url):
                raise SignInError(f"{server_url} names another resource ({resource}) in its metadata")
            issuer = str(resource_metadata.authorization_servers[0])
            metadata = None
            for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, server_url):
                found, metadata = await handle_auth_metadata_response(await http.get(url))
                if metadata is not None or not found:
                    break
    except SignInError:
        raise
    except (httpx2.HTTPError, outbound.OutboundRefused, OSError) as exc:
        raise _refusal(exc, f"Discovering the sign-in of {server_url}") from None
    if metadata is None:
        raise SignInError(f"The authorization server {issuer} publishes no metadata (RFC 8414)")
    if not issuers_match(str(metadata.issuer), issuer):
        raise SignInError(f"The authorization server's metadata names another issuer ({metadata.issuer})")
    if "S256" not in (metadata.code_challenge_methods_supported or []):
        raise SignInError(f"The authorization server {issuer} does not support PKCE S256: sign-in refused")
    scopes = get_client_metadata_scopes(scope, resource_metadata, metadata, GRANT_TYPES)
    return Discovery(resource=resource, scopes=scopes, metadata=metadata)


def _covers(resource: str, server_url: str) -> bool:
    """True when the metadata's resource is the MCP server's URL or a prefix of it on the same origin."""
    a, b = urlsplit(resource), urlsplit(server_url.rstrip("/"))
    return (a.scheme, a.netloc) == (b.scheme, b.netloc) and (b.path + "/").startswith(
        a.path.rstrip("/") + "/"
    )


# ---- registration ---------------------------------------------------------------------------------


def client_for(
    organization_id: str, item: GraphItem, metadata: OAuthMetadata, redirect_uri: str
) -> OAuthClient:
    """Our client at this authorization server, in the specification's order of preference.

    A client pre-registered on the graph item; one already registered for the organization; a
    Client ID Metadata Document when advertised and PUBLIC_URL is HTTPS; dynamic registration;
    otherwise an admin must enter client details.
    """
    issuer = str(metadata.issuer)
    pre = item.mcp_settings.get("client_id")
    if pre:
        secret = item.secret_settings().get("client_secret") or ""
        return _save_client(
            organization_id,
            issuer,
            pre,
            secret,
            redirect_uri,
            RegistrationMethod.PRE_REGISTERED,
            replace=True,
        )
    known = OAuthClient.objects.filter(
        organization_id=organization_id, issuer=issuer, redirect_uri=redirect_uri
    ).first()
    if known is not None:
        return known
    document_url = public_url() + METADATA_DOCUMENT_PATH
    if metadata.client_id_metadata_document_supported and document_url.startswith("https://"):
        return _save_client(
            organization_id, issuer, document_url, "", redirect_uri, RegistrationMethod.METADATA_DOCUMENT
        )
    if metadata.registration_endpoint:
        info = async_to_sync(_register)(metadata, redirect_uri)
        return _save_client(
            organization_id,
            issuer,
            info.client_id or "",
            info.client_secret or "",
            redirect_uri,
            RegistrationMethod.DYNAMIC,
        )
    raise SignInError(
        f"The authorization server {issuer} offers no way to register this console: an admin must register "
        f"a client there with the redirect URI {redirect_uri} and enter its client id on the MCP server's settings",
        409,
    )


def client_metadata(redirect_uri: str) -> OAuthClientMetadata:
    """What we say about ourselves when registering (and in the Client ID Metadata Document)."""
    return OAuthClientMetadata(
        redirect_uris=[redirect_uri],  # type: ignore[list-item]
        token_endpoint_auth_method="none",
        grant_types=GRANT_TYPES,
        response_types=["code"],
        client_name="Agent Task Console",
    )


async def _register(metadata: OAuthMetadata, redirect_uri: str) -> Any:
    request = create_client_registration_request(
        metadata, client_metadata(redirect_uri), str(metadata.issuer)
    )
    try:
        async with _client() as http:
            return await handle_registration_response(await http.send(request))
    except OAuthRegistrationError as exc:
        raise SignInError(
            f"Registering with the authorization server failed: {str(exc)[:200]}", 502
        ) from None
    except (httpx2.HTTPError, outbound.OutboundRefused, OSError) as exc:
        raise _refusal(exc, "The authorization server's registration endpoint") from None


def _save_client(
    organization_id: str,
    issuer: str,
    client_id: str,
    secret: str,
    redirect_uri: str,
    method: str,
    replace: bool = False,
) -> OAuthClient:
    values = {
        "client_id": client_id,
        "client_secret_encrypted": crypto.encrypt(secret) if secret else "",
        "method": method,
    }
    key = {"organization_id": organization_id, "issuer": issuer, "redirect_uri": redirect_uri}
    try:
        with transaction.atomic():
            if replace:
                return OAuthClient.objects.update_or_create(**key, defaults=values)[0]
            return OAuthClient.objects.get_or_create(**key, defaults=values)[0]
    except IntegrityError:  # two tabs registered at once: the first registration serves both
        return OAuthClient.objects.get(**key)


# ---- the flow -------------------------------------------------------------------------------------


def start(
    *,
    organization_id: str,
    owner: Owner,
    item: GraphItem,
    redirect_uri: str,
    session_key: str = "",
    step_up_scope: str | None = None,
    link_nonce: str | None = None,
) -> str:
    """Begin a sign-in for `owner` on an MCP graph item: the authorization server URL to send them to."""
    if not owner:
        raise SignInError("A sign-in needs a person to sign in")
    url = item.mcp_settings.get("url") or ""
    try:
        outbound.check_saved(url)
    except outbound.OutboundRefused as exc:
        raise SignInError(str(exc)) from None
    found = async_to_sync(discover)(url, step_up_scope)
    client = client_for(organization_id, item, found.metadata, redirect_uri)
    scopes = (
        union_scopes(vault.granted_scopes(organization_id, owner, item.key) or None, found.scopes)
        if step_up_scope
        else found.scopes
    )
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    try:
        _new_flow(
            link_nonce,
            state_hash=hash_state(state),
            organization_id=organization_id,
            member_id=owner.member_id,
            external_user_id="" if owner.is_member else owner.external_id,
            graph_item=item,
            session_hash=hash_state(session_key) if session_key else "",
            code_verifier_encrypted=crypto.encrypt(verifier),
            client_id=client.client_id,
            client_secret_encrypted=client.client_secret_encrypted,
            redirect_uri=redirect_uri,
            resource=found.resource,
            scopes=scopes or "",
            server_metadata=found.metadata.model_dump(mode="json", exclude_none=True),
            expires_at=timezone.now() + timedelta(seconds=settings.SIGNIN_FLOW_SECONDS),
        )
    except IntegrityError:
        raise SignInError("This sign-in link was already used: ask for a new one") from None
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "resource": found.resource,
    }
    if scopes:
        query["scope"] = scopes
    return f"{found.metadata.authorization_endpoint}?{urlencode(query)}"


def _new_flow(link_nonce: str | None, **values: Any) -> OAuthFlow:
    with transaction.atomic():
        return OAuthFlow.objects.create(link_nonce=link_nonce, **values)


def _claim(state: str, session_key: str) -> OAuthFlow:
    """The flow a callback's `state` names, marked used: single use, unexpired, same session."""
    if not state:
        raise SignInError("This sign-in callback has no state: start the sign-in again from the console")
    with transaction.atomic():
        flow = (
            OAuthFlow.objects.select_for_update()
            .select_related("graph_item", "graph_item__agent")
            .filter(state_hash=hash_state(state))
            .first()
        )
        if flow is None:
            raise SignInError("This sign-in link is not valid: start the sign-in again from the console")
        if flow.used_at is not None:
            raise SignInError("This sign-in link was already used: start the sign-in again from the console")
        if flow.expires_at <= timezone.now():
            raise SignInError("This sign-in link expired: start the sign-in again from the console")
        if flow.session_hash and flow.session_hash != hash_state(session_key or ""):
            raise SignInError("This sign-in was started by someone else or in another browser session")
        flow.used_at = timezone.now()
        flow.save(update_fields=["used_at"])
    return flow


def finish(params: dict[str, str], session_key: str = "") -> tuple[OAuthFlow, UserToken]:
    """Complete a sign-in from the authorization server's redirect: check, exchange, verify, store."""
    flow = _claim(params.get("state", ""), session_key)
    item = flow.graph_item
    name = item.mcp_settings.get("name") or item.name or item.key
    if params.get("error"):
        description = (params.get("error_description") or "")[:200]
        raise SignInError(
            f"The authorization server refused the sign-in: {params['error'][:60]} {description}".strip()
        )
    metadata = OAuthMetadata.model_validate(flow.server_metadata)
    try:
        validate_authorization_response_iss(params.get("iss"), metadata)
    except OAuthFlowError:
        raise SignInError(
            "The sign-in answer came from another authorization server (iss mismatch)"
        ) from None
    if not params.get("code"):
        raise SignInError("The authorization server sent no code")
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": flow.redirect_uri,
        "client_id": flow.client_id,
        "code_verifier": crypto.decrypt(flow.code_verifier_encrypted),
        "resource": flow.resource,
    }
    if flow.client_secret_encrypted:
        form["client_secret"] = crypto.decrypt(flow.client_secret_encrypted)
    token = async_to_sync(_token_request)(str(metadata.token_endpoint), form)
    url = item.mcp_settings.get("url") or ""
    if async_to_sync(accepted_by)(url, token.access_token) is not True:
        raise SignInError(
            f"{name} does not accept the token the authorization server issued (is it for another resource?)"
        )
    owner = Owner(member_id=flow.member_id) if flow.member_id else Owner(external_id=flow.external_user_id)
    row = save_token(
        flow.organization_id,
        owner,
        item.key,
        token,
        source="oauth",
        issuer=str(metadata.issuer),
        resource=flow.resource,
        client_id=flow.client_id,
    )
    return flow, row


async def _token_request(endpoint: str, form: dict[str, str]) -> OAuthToken:
    """POST to the token endpoint; an error answer becomes a SignInError naming the OAuth error."""
    try:
        async with _client() as http:
            response = await http.post(endpoint, data=form, headers={"Accept": "application/json"})
    except (httpx2.HTTPError, outbound.OutboundRefused, OSError) as exc:
        raise _refusal(exc, "The authorization server's token endpoint") from None
    if response.status_code != 200:
        try:
            error = str(response.json().get("error", ""))[:60]
        except ValueError:
            error = ""
        raise SignInError(
            f"The authorization server refused the token request (HTTP {response.status_code} {error})".strip(),
            502,
        )
    try:
        return OAuthToken.model_validate_json(response.content)
    except ValidationError:
        raise SignInError("The authorization server answered with an invalid token response", 502) from None


async def accepted_by(server_url: str, token: str) -> bool | None:
    """One authenticated request: True accepted, False refused (401/403), None unreachable."""
    try:
        async with _client() as http:
            response = await http.post(
                server_url, json=_INITIALIZE, headers={**_MCP_HEADERS, "Authorization": f"Bearer {token}"}
            )
    except (httpx2.HTTPError, outbound.OutboundRefused, OSError):
        return None
    if response.status_code in (401, 403):
        return False
    return response.status_code < 400


def save_token(
    organization_id: str,
    owner: Owner,
    graph_item_key: str,
    token: OAuthToken | str,
    *,
    source: str,
    issuer: str = "",
    resource: str = "",
    client_id: str = "",
) -> UserToken:
    """Store a token and its OAuth details for the owner, replacing the previous connection."""
    if isinstance(token, str):
        token = OAuthToken(access_token=token)
    expires = timezone.now() + timedelta(seconds=token.expires_in) if token.expires_in else None
    values = {
        "token_encrypted": crypto.encrypt(token.access_token),
        "refresh_token_encrypted": crypto.encrypt(token.refresh_token) if token.refresh_token else "",
        "token_type": token.token_type,
        "scopes": token.scope or "",
        "issuer": issuer,
        "resource": resource,
        "client_id": client_id,
        "source": source,
        "expires_at": expires,
        "last4": token.access_token[-4:],
        "refreshed_at": None,
        "refresh_error": "",
        "refresh_failures": 0,
        "needs_signin": False,
    }
    row, _ = UserToken.objects.update_or_create(
        organization_id=organization_id,
        member_id=owner.member_id,
        external_user_id="" if owner.is_member else owner.external_id,
        graph_item_key=graph_item_key,
        defaults=values,
    )
    return row


# ---- refresh --------------------------------------------------------------------------------------


def due(row: UserToken) -> bool:
    """True when an OAuth token expires within REFRESH_MARGIN_SECONDS and can be refreshed."""
    if not row.refresh_token_encrypted or row.expires_at is None or row.needs_signin:
        return False
    return row.expires_at - timezone.now() < timedelta(seconds=settings.OAUTH_REFRESH_MARGIN_SECONDS)


def refresh(row_id: int, *, rejected_token: str | None = None) -> UserToken | None:
    """Refresh a connection in its refresh turn: one refresh however many tasks and processes ask.

    Without `rejected_token`, only a token that is due is refreshed; with it (the MCP server just
    answered 401 to that token), only if the stored token is still that one. Whoever waited for the
    turn reads the refreshed row. Returns the row (None if it was deleted meanwhile).
    """
    with _refresh_turn(row_id):
        row = UserToken.objects.filter(pk=row_id).first()
        if row is None or not row.refresh_token_encrypted or row.needs_signin:
            return row
        if rejected_token is None and not due(row):
            return row
        if rejected_token is not None and row.reveal() != rejected_token:
            return row  # someone refreshed it after that token was used
        client = OAuthClient.objects.filter(
            organization_id=row.organization_id, issuer=row.issuer, client_id=row.client_id
        ).first()
        if client is None:
            return _refresh_failed(row, "the OAuth client registration is gone: sign in again", final=True)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": row.reveal_refresh(),
            "client_id": client.client_id,
            "resource": row.resource,
        }
        if client.client_secret_encrypted:
            form["client_secret"] = client.secret()
        try:
            endpoint = async_to_sync(_token_endpoint)(row.issuer)
            token = async_to_sync(_token_request)(endpoint, form)
        except SignInError as exc:
            return _refresh_failed(row, exc.message, final="invalid_grant" in exc.message)
        now = timezone.now()
        refreshed = {
            "token_encrypted": crypto.encrypt(token.access_token),
            "expires_at": now + timedelta(seconds=token.expires_in) if token.expires_in else None,
            "scopes": token.scope or row.scopes,
            "last4": token.access_token[-4:],
            "refreshed_at": now,
            "refresh_error": "",
            "refresh_failures": 0,
        }
        if token.refresh_token:  # rotated: the old one is spent
            refreshed["refresh_token_encrypted"] = crypto.encrypt(token.refresh_token)
        return _store_refresh(row, refreshed)


@contextlib.contextmanager
def _refresh_turn(row_id: int) -> Iterator[None]:
    """Hold the connection's refresh turn: one refresh of a connection at a time, in every process.

    Where the database locks rows (PostgreSQL), the turn is the row's lock, held by a transaction
    around the whole refresh. SQLite's only lock is the database's write lock: held across the
    authorization server's two requests (15 s timeouts each), it stalled every writer of every
    process, and they give up after 20 s. There the turn is an exclusive lock on the connection's
    file beside the database (`_lock_file`), and the refresh's outcome is written by one short
    transaction of its own (`_store_refresh`).
    """
    connection = transaction.get_connection()
    if connection.vendor != "sqlite":
        with transaction.atomic():
            list(UserToken.objects.select_for_update().filter(pk=row_id).values_list("pk", flat=True))
            yield
        return
    # Called outside any transaction (the vault's reads, a run's renewal): inside one, the turn would
    # end before the outer commit, and another refresher could read the spent refresh token.
    with open(_lock_file(connection.settings_dict["NAME"], row_id), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _lock_file(database: object, row_id: int) -> Path:
    """The refresh turn's file: beside the database file, so every process using it finds it there
    whatever its VAR_DIR; an in-memory database (one process) gets one under VAR_DIR."""
    name = str(database)
    if name.startswith("file:") or ":memory:" in name or "mode=memory" in name:
        folder = Path(settings.VAR_DIR) / "locks" / hashlib.sha256(name.encode()).hexdigest()[:16]
    else:
        folder = Path(name).resolve().with_name(f"{Path(name).name}-locks")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"oauth-refresh-{int(row_id)}.lock"


STORE_ATTEMPTS = 3  # a refresh's outcome is worth retrying: the server has spent the old refresh token


def _store_refresh(row: UserToken, changes: dict[str, Any]) -> UserToken | None:
    """Write a refresh's outcome only over the refresh token it used; returns the row as it stands.

    Under a row lock nothing else can have changed it. Under SQLite's file lock a new sign-in (a new
    refresh token) or a disconnect may have come meanwhile: it wins, and the caller gets the row as
    it is. Tokens a task brought (`vault.store`) change only the access token: the refresh's pair is
    written over them, so its rotated refresh token is kept.
    """
    changes = {**changes, "updated_at": timezone.now()}
    for attempt in range(STORE_ATTEMPTS):
        try:
            with transaction.atomic():  # through the writers' queue (console/sqlite/base.py)
                written = UserToken.objects.filter(
                    pk=row.pk, refresh_token_encrypted=row.refresh_token_encrypted
                ).update(**changes)
            break
        except OperationalError:
            if attempt == STORE_ATTEMPTS - 1 or transaction.get_connection().in_atomic_block:
                raise
    if not written:
        return UserToken.objects.filter(pk=row.pk).first()
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def _refresh_failed(row: UserToken, message: str, final: bool) -> UserToken | None:
    failures = row.refresh_failures + 1
    return _store_refresh(
        row,
        {
            "refresh_error": message[:500],
            "refresh_failures": failures,
            "needs_signin": final or failures >= MAX_REFRESH_FAILURES,
        },
    )


async def _token_endpoint(issuer: str) -> str:
    """The token endpoint from the issuer's metadata (read at refresh time: endpoints move)."""
    try:
        async with _client() as http:
            for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
                found, metadata = await handle_auth_metadata_response(await http.get(url))
                if metadata is not None:
                    return str(metadata.token_endpoint)
                if not found:
                    break
    except (httpx2.HTTPError, outbound.OutboundRefused, OSError) as exc:
        raise _refusal(exc, f"The authorization server {issuer}") from None
    raise SignInError(f"The authorization server {issuer} publishes no metadata")


# ---- signed sign-in links -------------------------------------------------------------------------

LINK_SALT = "console.oauth.signin-link"
LINK_PATH = "/connections/signin/"


@dataclass(frozen=True)
class Link:
    """What a signed sign-in link names: whose connection to which graph item, and its nonce."""

    organization_id: str
    owner: Owner
    item: GraphItem
    nonce: str
    step_up_scope: str | None = None


def signin_link(
    organization_id: str, owner: Owner, item: GraphItem, base: str = "", step_up_scope: str | None = None
) -> str:
    """A signed, expiring link that starts one sign-in for this (organization, owner, graph item).

    It needs no console session, so an end user named by a service key can follow it; a member's
    link is also checked against the signed-in member.
    """
    payload = {
        "o": organization_id,
        "m": owner.member_id,
        "e": "" if owner.is_member else owner.external_id,
        "i": item.pk,
        "n": secrets.token_urlsafe(16),
        "s": step_up_scope,
    }
    token = signing.dumps(payload, salt=LINK_SALT, compress=True)
    return f"{public_url(base)}{LINK_PATH}{token}/"


def open_link(token: str) -> Link:
    """The link's contents, or SignInError (400) for a forged, expired or already used link."""
    try:
        payload = signing.loads(token, salt=LINK_SALT, max_age=settings.SIGNIN_WAIT_SECONDS)
    except signing.SignatureExpired:
        raise SignInError("This sign-in link expired: ask for a new one") from None
    except signing.BadSignature:
        raise SignInError("This sign-in link is not valid") from None
    if OAuthFlow.objects.filter(link_nonce=payload["n"]).exists():
        raise SignInError("This sign-in link was already used: ask for a new one")
    item = (
        GraphItem.objects.select_related("agent")
        .filter(pk=payload["i"], agent__organization_id=payload["o"])
        .first()
    )
    if item is None:
        raise SignInError("This sign-in link names an MCP server that no longer exists", 404)
    owner = Owner(member_id=payload["m"]) if payload["m"] else Owner(external_id=payload["e"])
    return Link(payload["o"], owner, item, payload["n"], payload.get("s"))


def login_url_for(
    organization_id: str,
    owner: Owner,
    agent: Any,
    details: dict[str, Any],
    generate: bool | None,
    base: str = "",
) -> str | None:
    """For get_token: a sign-in link when this person has no usable token and can sign in.

    "" while the SDK polls (generate_login_url=false: keep answering login_required); None when a
    sign-in cannot be offered (not asked for, nobody, an unknown server, a token exists, or no
    discoverable sign-in).
    """
    item = vault.match_item(agent, details) if owner and generate is not None else None
    if item is None or vault.token_for(organization_id, owner, item):
        return None
    if not generate:
        return "" if (item.mcp_settings.get("auth_type") or "none") != "none" else None
    try:
        async_to_sync(discover)(item.mcp_settings.get("url") or "")
    except SignInError:
        return None
    return signin_link(organization_id, owner, item, base)


def forget_old_flows() -> int:
    """Delete sign-ins older than any link that could still name them (a link's nonce stays spent)."""
    age = settings.SIGNIN_WAIT_SECONDS + settings.SIGNIN_FLOW_SECONDS
    deleted, _ = OAuthFlow.objects.filter(created_at__lt=timezone.now() - timedelta(seconds=age)).delete()
    return deleted

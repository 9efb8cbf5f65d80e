"""A real OAuth authorization server and a real MCP server that trusts it, each on a free 127.0.0.1 port.

Built from the `mcp` package's server-side auth (its authorize, token, registration and metadata
handlers, PKCE S256 checks and bearer middleware with `validate_token_resource=True`), with an
in-memory provider that issues, expires, rotates and revokes tokens bound to the RFC 8707 resource::

    from tests.tools.oauth_server import OAuthMCP

    with OAuthMCP() as oauth:
        oauth.mcp_url                  # "http://127.0.0.1:<B>/mcp" (answers 401 + resource_metadata)
        oauth.issuer                   # "http://127.0.0.1:<A>"
        callback = oauth.approve(authorize_url, user="alice")   # the consent page, as a browser would
        oauth.provider.refreshes       # refresh_token grants served
        oauth.calls                    # [("whoami", "alice"), ...] tool calls with the token's subject

The authorize endpoint sends the browser to `/consent?request=<id>`, a page with one "Allow as"
form (the Playwright test clicks it); `approve()` does the same over HTTP and returns the redirect
to the client's callback (with `code`, `state` and `iss`). Knobs, set before or between tests:
`access_ttl` (seconds), `s256` (advertise S256 PKCE), `dcr` (offer registration), `cimd`,
`iss_supported`, `wrong_resource` (issue tokens for another resource), `refresh_delay` (seconds a
refresh takes), `provider.refresh_gate` (refreshes wait for it; `provider.refresh_started` is set
as one comes in), `fail_refresh` (answer refreshes `invalid_grant`). Tools: `whoami` (the token's
subject) and `hold` (calls `on_hold`, then waits for `gate`, which is open unless cleared).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    ProviderTokenVerifier,
    RefreshToken,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.auth.routes import create_auth_routes, create_protected_resource_routes
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["OAuthMCP", "Provider"]


class Provider:
    """An in-memory authorization server: clients, codes, access and refresh tokens (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.pending: dict[str, tuple[OAuthClientInformationFull, AuthorizationParams]] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.refreshes = 0  # refresh_token grants answered
        self.registrations = 0
        self.token_requests: list[str] = []  # grant type of every token request
        self.access_ttl = 3600
        self.refresh_delay = 0.0
        self.refresh_started = threading.Event()  # set as a refresh_token grant comes in
        self.refresh_gate = threading.Event()  # refresh_token grants wait for it (open unless cleared)
        self.refresh_gate.set()
        self.fail_refresh = False
        self.wrong_resource = False
        self.issuer = ""
        self.scopes: list[str] = []
        # Client ID Metadata Documents: how the server fetches one (the test decides), and what it fetched.
        self.fetch_document: Any = None
        self.documents_fetched: list[str] = []

    # -- the OAuthAuthorizationServerProvider protocol --------------------------------------------
    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        with self.lock:
            known = self.clients.get(client_id)
        if known is None and client_id.startswith("https://") and self.fetch_document is not None:
            return self._from_document(client_id)
        return known

    def _from_document(self, url: str) -> OAuthClientInformationFull | None:
        """A Client ID Metadata Document client: the document at the client id URL, which must name itself."""
        document = self.fetch_document(url)
        if not isinstance(document, dict) or document.get("client_id") != url:
            return None
        self.documents_fetched.append(url)
        return OAuthClientInformationFull(
            client_id=url,
            redirect_uris=document["redirect_uris"],
            token_endpoint_auth_method="none",
            grant_types=document.get("grant_types") or ["authorization_code"],
            scope=" ".join(self.scopes),
        )

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        with self.lock:
            self.clients[client_info.client_id or ""] = client_info
            self.registrations += 1

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        request_id = secrets.token_urlsafe(16)
        with self.lock:
            self.pending[request_id] = (client, params)
        return f"{self.issuer}/consent?{urlencode({'request': request_id})}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, code: str
    ) -> AuthorizationCode | None:
        with self.lock:
            found = self.codes.get(code)
        return found if found and found.client_id == client.client_id else None

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        with self.lock:
            self.codes.pop(authorization_code.code, None)
            self.token_requests.append("authorization_code")
        resource = "http://127.0.0.1:1/elsewhere" if self.wrong_resource else authorization_code.resource
        return self._issue(
            client.client_id or "", authorization_code.scopes, resource, authorization_code.subject
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        with self.lock:
            found = self.refresh.get(refresh_token)
        return found if found and found.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        with self.lock:
            self.token_requests.append("refresh_token")
            self.refreshes += 1
        self.refresh_started.set()
        while not self.refresh_gate.is_set():
            await asyncio.sleep(0.01)
        if self.refresh_delay:
            await asyncio.sleep(self.refresh_delay)
        if self.fail_refresh:
            raise TokenError("invalid_grant", "refresh token expired")
        with self.lock:
            if self.refresh.pop(refresh_token.token, None) is None:  # rotated: a reused one is refused
                raise TokenError("invalid_grant", "refresh token already used")
        return self._issue(
            client.client_id or "",
            scopes or refresh_token.scopes,
            refresh_token.resource,
            refresh_token.subject,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        with self.lock:
            found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at <= time.time()):
            return None
        return found

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        with self.lock:
            self.access.pop(token.token, None)
            self.refresh.pop(token.token, None)

    # -- helpers ----------------------------------------------------------------------------------
    def _issue(
        self, client_id: str, scopes: list[str], resource: str | None, subject: str | None
    ) -> OAuthToken:
        access, refresh = "at_" + secrets.token_urlsafe(24), "rt_" + secrets.token_urlsafe(24)
        expires = int(time.time()) + self.access_ttl
        with self.lock:
            self.access[access] = AccessToken(
                token=access,
                client_id=client_id,
                scopes=scopes,
                expires_at=expires,
                resource=resource,
                subject=subject,
            )
            self.refresh[refresh] = RefreshToken(
                token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject
            )
        return OAuthToken(
            access_token=access, expires_in=self.access_ttl, scope=" ".join(scopes), refresh_token=refresh
        )

    def approve(self, request_id: str, user: str) -> str:
        """Issue a code for a pending authorization as `user`; the redirect to the client's callback."""
        with self.lock:
            client, params = self.pending.pop(request_id)
            code = "code_" + secrets.token_urlsafe(24)
            self.codes[code] = AuthorizationCode(
                code=code,
                scopes=params.scopes or [],
                expires_at=time.time() + 300,
                client_id=client.client_id or "",
                code_challenge=params.code_challenge,
                redirect_uri=params.redirect_uri,
                redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
                resource=params.resource,
                subject=user,
            )
        return construct_redirect_uri(
            str(params.redirect_uri), code=code, state=params.state, iss=self.issuer
        )

    def expire_all(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        with self.lock:
            for token in self.access.values():
                token.expires_at = int(time.time()) - 1


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Served:
    """One ASGI app under uvicorn in a daemon thread with its own event loop."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=2
            )
        )
        self.sock = sock
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[sock])),
            daemon=True,
            name="oauth-test-server",
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test OAuth server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        with contextlib.suppress(OSError):
            self.sock.close()


class OAuthMCP:
    """The authorization server and the MCP server it protects. See the module docstring."""

    def __init__(self, scopes: tuple[str, ...] = ("tools",)) -> None:
        self.provider = Provider()
        self.scopes = list(scopes)  # offered, and required by the MCP server (403 insufficient_scope)
        self.s256 = True
        self.dcr = True
        self.cimd = False
        self.iss_supported = True
        self.calls: list[tuple[str, str | None]] = []
        self.gate = threading.Event()  # `hold` calls wait for it
        self.gate.set()
        self.on_hold: Any = None  # called by each `hold` call as it starts
        self._as_sock, self._mcp_sock = _listen(), _listen()
        self.issuer = f"http://127.0.0.1:{self._as_sock.getsockname()[1]}"
        self.mcp_base = f"http://127.0.0.1:{self._mcp_sock.getsockname()[1]}"
        self.mcp_url = f"{self.mcp_base}/mcp"
        self.provider.issuer = self.issuer
        self.provider.scopes = self.scopes
        self._served: list[_Served] = []

    # -- knobs that pass through to the provider --------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name in {"access_ttl", "refresh_delay", "fail_refresh", "wrong_resource"}:
            setattr(self.provider, name, value)
        else:
            super().__setattr__(name, value)

    # -- the authorization server -----------------------------------------------------------------
    def _as_app(self) -> Starlette:
        routes = create_auth_routes(
            provider=self.provider,
            issuer_url=AnyHttpUrl(self.issuer),
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=self.scopes, default_scopes=self.scopes
            ),
        )

        async def metadata(request: Request) -> Response:
            base = self.issuer
            body: dict[str, Any] = {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "scopes_supported": self.scopes,
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                    "none",
                ],
                "code_challenge_methods_supported": ["S256"] if self.s256 else ["plain"],
                "authorization_response_iss_parameter_supported": self.iss_supported,
            }
            if self.dcr:
                body["registration_endpoint"] = f"{base}/register"
            if self.cimd:
                body["client_id_metadata_document_supported"] = True
            return JSONResponse(body)

        async def consent_page(request: Request) -> Response:
            request_id = request.query_params.get("request", "")
            return HTMLResponse(
                "<!doctype html><title>Test authorization server</title><h1>Allow access?</h1>"
                f'<form method="post" action="/consent"><input type="hidden" name="request" value="{request_id}">'
                '<label>User <input name="user" value="alice"></label>'
                '<button type="submit">Allow</button></form>'
            )

        async def consent(request: Request) -> Response:
            form = await request.form()
            return RedirectResponse(
                self.provider.approve(str(form["request"]), str(form["user"])), status_code=302
            )

        overrides = [
            Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
            Route("/consent", consent_page, methods=["GET"]),
            Route("/consent", consent, methods=["POST"]),
        ]
        return Starlette(routes=overrides + routes)

    # -- the MCP server ---------------------------------------------------------------------------
    def _mcp_app(self) -> Any:
        server = MCPServer(
            "oauth-tools",
            token_verifier=ProviderTokenVerifier(self.provider),
            auth=AuthSettings(
                issuer_url=AnyHttpUrl(self.issuer),
                resource_server_url=AnyHttpUrl(self.mcp_url),
                validate_token_resource=True,
                required_scopes=self.scopes,
            ),
            log_level="WARNING",
        )

        @server.tool()
        def whoami(ctx: Context) -> str:
            """Return the name of the user calling this tool."""
            token = get_access_token()
            user = token.subject if token else None
            self.calls.append(("whoami", user))
            return user or "anonymous"

        @server.tool()
        async def hold() -> str:
            """Wait until the test opens the gate (a long-running step of a task)."""
            self.calls.append(("hold", None))
            if self.on_hold is not None:
                self.on_hold()
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
            return "held"

        app = server.streamable_http_app(streamable_http_path="/mcp", json_response=True, host="127.0.0.1")
        prm = create_protected_resource_routes(
            AnyHttpUrl(self.mcp_url), [AnyHttpUrl(self.issuer)], scopes_supported=self.scopes
        )
        for route in prm:
            if not any(getattr(r, "path", None) == route.path for r in app.router.routes):
                app.router.routes.insert(0, route)
        return app

    # -- driving the consent page like a browser --------------------------------------------------
    def approve(self, authorize_url: str, user: str = "alice") -> str:
        """Follow an authorization URL to the consent page and allow as `user`: the callback URL."""
        with httpx.Client(timeout=10) as http:
            first = http.get(authorize_url)
            if first.status_code != 302:
                raise AssertionError(f"authorize answered {first.status_code}: {first.text[:300]}")
            consent = httpx.URL(first.headers["location"])
            request_id = consent.params["request"]
        return self.provider.approve(request_id, user)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> OAuthMCP:
        self._served = [_Served(self._as_app(), self._as_sock), _Served(self._mcp_app(), self._mcp_sock)]
        return self

    def stop(self) -> None:
        for served in self._served:
            served.stop()
        self._served = []

    def __enter__(self) -> OAuthMCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

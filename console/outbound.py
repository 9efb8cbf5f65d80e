"""Outbound HTTP for the runtime (files, model endpoints, MCP servers) under the egress guard.

Pinning is done in the connection pool's network backend: every TCP connect resolves the host,
checks each address against console.egress and OUTBOUND_ALLOWLIST, and connects to a checked
address. TLS still verifies the certificate against the host name (httpcore passes the URL's host
as SNI), keep-alive connections were checked when they were opened, and redirects are covered
because each new connection goes through the same check. Environment proxies are not used: a
proxy would resolve the host itself and undo the check.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore2
import httpx2
from django.conf import settings

from console.egress import Allowlist, OutboundRefused, check_saved_url, resolve

LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)  # the model SDKs' defaults
__all__ = ["GuardedTransport", "OutboundRefused", "allowlist", "check_url", "client", "refusal_in"]


def allowlist() -> Allowlist:
    """The operator's OUTBOUND_ALLOWLIST (FILE_FETCH_ALLOWLIST is merged into it by the settings)."""
    return Allowlist.parse(settings.OUTBOUND_ALLOWLIST)


def check_saved(url: str) -> None:
    """Save-time check of an admin-set URL: refuses a literal internal address (OutboundRefused)."""
    check_saved_url(url, allowlist())


async def check_url(url: str) -> None:
    """Resolve a URL's host now and refuse it if it is internal: a clear failure before a run starts."""
    parsed = httpx2.URL(url)
    if not parsed.host:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        await resolve(parsed.host, port, allowlist())
    except OSError:
        return  # not resolving is reported by the connection attempt, like any unreachable host


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """A network backend that connects only to addresses the egress guard allows."""

    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve(host, port, allowlist())
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(f"{host} does not resolve ({exc})") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise OutboundRefused("destination not allowed: unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport with the guarded network backend (and no environment proxies)."""

    def __init__(
        self,
        verify: ssl.SSLContext | bool = True,
        limits: httpx2.Limits = LIMITS,
        http2: bool = False,
    ) -> None:
        super().__init__(verify=verify, limits=limits, http2=http2, trust_env=False)
        context = verify if isinstance(verify, ssl.SSLContext) else httpx2.create_ssl_context(verify=verify)
        # The pool httpx2 built is replaced by one with the same settings and our backend.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=GuardedBackend(),
        )


def client(**kwargs: Any) -> httpx2.AsyncClient:
    """An httpx2 client whose every connection is guarded; kwargs as httpx2.AsyncClient's."""
    verify = kwargs.pop("verify", True)
    limits = kwargs.pop("limits", LIMITS)  # given to the transport: the client's own would be ignored
    return httpx2.AsyncClient(
        transport=GuardedTransport(verify=verify, limits=limits), trust_env=False, **kwargs
    )


def refusal_in(exc: BaseException) -> OutboundRefused | None:
    """The guard's refusal anywhere in an exception's causes, contexts or groups (SDKs wrap it)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OutboundRefused):
            return current
        stack += [current.__cause__, current.__context__]
        stack += list(getattr(current, "exceptions", None) or [])
    return None

"""Fetching user-supplied file URLs without becoming an SSRF hole: the one fetcher of the client
and of the server's runtime.

A URL is fetched only if its host resolves to addresses the guard allows, and the connection goes
to the address that was checked (so a second DNS answer cannot swap in an internal one). Redirects
are followed by hand, each hop checked again; bodies are capped in size and time while they
stream. The guard is the client's Policy (the SDK's environment variables below) or, in the
server, AllowlistGuard (tasks_app.client.egress with OUTBOUND_ALLOWLIST). No Django here.

Environment, as the official SDK reads it:
- XPANDER_INTERNAL_FETCH_ALLOWLIST: hosts, domains or CIDRs that may resolve to private or
  loopback space (e.g. `127.0.0.1` for a test server). Link-local, multicast, reserved and
  unspecified addresses stay refused.
- XPANDER_EGRESS_ALLOWLIST: when set, only these hosts (and their subdomains) are fetched.
- XPANDER_SAFE_FETCH: `legacy` turns the guard off, `warn` logs and fetches anyway (both ignored
  while an egress allowlist is set).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from tasks_app.client.egress import Allowlist, embedded_ipv4, refusal
from tasks_app.client.transport import ssl_context

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MB = 1024 * 1024
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """The URL was refused or could not be fetched; the message is safe to show."""


@dataclass
class Fetched:
    url: str
    content: bytes
    content_type: str  # lower-cased, without parameters
    charset: str


class Guard(Protocol):
    """Which destinations a fetch may connect to."""

    @property
    def pins(self) -> bool:
        """False: connect to the host as named, without resolving and checking it."""
        ...

    def host_refusal(self, host: str) -> str | None:
        """Why `host` may not be fetched whatever it resolves to, or None."""
        ...

    def vet(self, url: str, host: str, addresses: list[IPAddress]) -> str | None:
        """Why `host` at `addresses` may not be fetched, or None when it may."""
        ...


@dataclass(frozen=True)
class AllowlistGuard:
    """The server's guard: internal addresses only when OUTBOUND_ALLOWLIST lists them."""

    allowlist: Allowlist
    pins: bool = True

    def host_refusal(self, host: str) -> str | None:
        return None

    def vet(self, url: str, host: str, addresses: list[IPAddress]) -> str | None:
        return next(filter(None, (refusal(host, a, self.allowlist) for a in addresses)), None)


@dataclass(frozen=True)
class Policy:
    mode: str
    egress: tuple[str, ...] | None
    internal_names: tuple[str, ...]
    internal_nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_env(cls) -> Policy:
        egress = _entries(os.environ.get("XPANDER_EGRESS_ALLOWLIST", ""))
        names: list[str] = []
        nets = []
        for entry in _entries(os.environ.get("XPANDER_INTERNAL_FETCH_ALLOWLIST", "")) or ():
            try:
                nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.append(entry)
        mode = os.environ.get("XPANDER_SAFE_FETCH", "").strip().lower()
        return cls(mode if not egress else "enforce", egress, tuple(names), tuple(nets))

    @property
    def pins(self) -> bool:
        return self.mode != "legacy"

    def host_refusal(self, host: str) -> str | None:
        if self.egress is not None and not _matches(host, self.egress):
            return f"{host!r} is not on the egress allowlist (XPANDER_EGRESS_ALLOWLIST)"
        return None

    def vet(self, url: str, host: str, addresses: list[IPAddress]) -> str | None:
        refusals = [r for r in (self.refusal(host, a) for a in addresses) if r]
        if host.lower().rstrip(".") == "localhost" and not _matches(host, self.internal_names):
            refusals.append("'localhost' is refused; list it in XPANDER_INTERNAL_FETCH_ALLOWLIST to allow it")
        if refusals and self.mode == "warn":
            log.warning("fetching %s despite the SSRF guard (XPANDER_SAFE_FETCH=warn): %s", url, refusals[0])
            return None
        return refusals[0] if refusals else None

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why `host` at `address` may not be fetched, or None when it may."""
        inner = embedded_ipv4(address)  # mapped, compatible, SIIT, NAT64, 6to4: judged by their IPv4
        if inner is not None and not (address.is_loopback or address.is_unspecified):
            address = inner
        if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved:
            return f"{host!r} resolves to {address}, a link-local, multicast or reserved address"
        internal = address.is_loopback or address.is_private or (address.version == 4 and address in _CGNAT)
        if not internal:
            return None
        if _matches(host, self.internal_names) or any(address in net for net in self.internal_nets):
            return None
        return (
            f"{host!r} resolves to the internal address {address}; "
            "list it in XPANDER_INTERNAL_FETCH_ALLOWLIST to allow it"
        )


def _entries(raw: str) -> tuple[str, ...] | None:
    items = tuple(e.strip().lower().removeprefix("*.").strip(".") for e in raw.split(","))
    items = tuple(e for e in items if e)
    return items or None


def _matches(host: str, entries: tuple[str, ...]) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    return any(host == e or host.endswith("." + e) for e in entries)


@dataclass(frozen=True)
class Target:
    """A checked hop: the URL to request (host replaced by the checked address) and how to present it."""

    url: str
    request_url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, str]


def _split(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise FetchError(f"{url[:200]}: only http(s) URLs can be fetched")
    if parts.username or parts.password:
        raise FetchError(f"{parts.hostname}: URLs with credentials are not fetched")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError(f"{url[:200]}: bad port") from None
    return parts.hostname, port


def _target(url: str, host: str, infos: list[tuple], guard: Guard) -> Target:
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
    if not addresses:
        raise FetchError(f"{url}: {host!r} does not resolve")
    reason = guard.vet(url, host, addresses)
    if reason:
        raise FetchError(f"{url}: {reason}")
    original = httpx.URL(url)
    return Target(
        url=url,
        request_url=original.copy_with(host=str(addresses[0])),
        headers={"host": original.netloc.decode("ascii")},
        extensions={"sni_hostname": host},
    )


def _plain_target(url: str) -> Target:
    return Target(url=url, request_url=httpx.URL(url), headers={}, extensions={})


def _checked_host(url: str, guard: Guard) -> tuple[str, int]:
    host, port = _split(url)
    reason = guard.host_refusal(host)
    if reason:
        raise FetchError(f"{url}: {reason}")
    return host, port


def _resolve(url: str, guard: Guard) -> Target:
    host, port = _checked_host(url, guard)
    if not guard.pins:
        return _plain_target(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"{url}: {host!r} does not resolve ({exc})") from None
    return _target(url, host, infos, guard)


async def _aresolve(url: str, guard: Guard) -> Target:
    host, port = _checked_host(url, guard)
    if not guard.pins:
        return _plain_target(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"{url}: {host!r} does not resolve ({exc})") from None
    return _target(url, host, infos, guard)


def _content_type(response: httpx.Response) -> tuple[str, str]:
    raw = response.headers.get("content-type", "")
    mime = raw.split(";", 1)[0].strip().lower()
    charset = response.charset_encoding or "utf-8"
    return mime, charset


def _next_hop(target: Target, response: httpx.Response) -> str | None:
    if response.status_code in {301, 302, 303, 307, 308} and response.headers.get("location"):
        return urljoin(target.url, response.headers["location"])
    if not response.is_success:
        raise FetchError(f"{target.url}: the server answered {response.status_code}")
    return None


def _too_large(url: str, max_bytes: int) -> FetchError:
    size = f"{max_bytes // MB} MB" if max_bytes >= MB and max_bytes % MB == 0 else f"{max_bytes} bytes"
    return FetchError(f"{url}: larger than {size}")


def _check_size(response: httpx.Response, url: str, max_bytes: int) -> None:
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(url, max_bytes)


def _client_kwargs(timeout: float) -> dict:
    # trust_env=False: a proxy from the environment would re-resolve the host and undo the pinning.
    return {"timeout": timeout, "verify": ssl_context(), "trust_env": False, "follow_redirects": False}


def _take(body: bytearray, chunk: bytes, url: str, max_bytes: int, deadline: float, timeout: float) -> None:
    """Add a chunk of a download, enforcing its size and time budget."""
    body += chunk
    if len(body) > max_bytes:
        raise _too_large(url, max_bytes)
    if time.monotonic() > deadline:
        raise FetchError(f"{url}: took longer than {timeout}s")


def safe_fetch(url: str, *, max_bytes: int, timeout: float = 10.0, guard: Guard | None = None) -> Fetched:
    """GET `url` under the SSRF guard (the environment's Policy unless `guard` is given); at most
    `max_bytes` of body within `timeout` seconds."""
    guard = guard or Policy.from_env()
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(**_client_kwargs(timeout)) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target = _resolve(url, guard)
                with client.stream(
                    "GET", target.request_url, headers=target.headers, extensions=target.extensions
                ) as response:
                    url_next = _next_hop(target, response)
                    if url_next is None:
                        _check_size(response, url, max_bytes)
                        body = bytearray()
                        for chunk in response.iter_bytes():
                            _take(body, chunk, url, max_bytes, deadline, timeout)
                        return Fetched(url, bytes(body), *_content_type(response))
                url = url_next
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}") from None
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


async def asafe_fetch(
    url: str, *, max_bytes: int, timeout: float = 10.0, guard: Guard | None = None
) -> Fetched:
    """The async twin of safe_fetch."""
    guard = guard or Policy.from_env()
    deadline = time.monotonic() + timeout
    try:
        async with httpx.AsyncClient(**_client_kwargs(timeout)) as client:
            for _ in range(MAX_REDIRECTS + 1):
                target = await _aresolve(url, guard)
                async with client.stream(
                    "GET", target.request_url, headers=target.headers, extensions=target.extensions
                ) as response:
                    url_next = _next_hop(target, response)
                    if url_next is None:
                        _check_size(response, url, max_bytes)
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            _take(body, chunk, url, max_bytes, deadline, timeout)
                        return Fetched(url, bytes(body), *_content_type(response))
                url = url_next
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: {type(exc).__name__}") from None
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")

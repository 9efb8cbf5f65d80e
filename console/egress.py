"""Which outbound destinations the server may connect to: one rule for files, models and MCP servers.

A destination is refused when its address is loopback, private, link-local, shared (CGNAT),
reserved, multicast or unspecified, including the IPv6 forms that embed such an IPv4 address
(IPv4-mapped and -compatible, SIIT, NAT64 and 6to4), unless the operator lists its host name or a
CIDR holding it in OUTBOUND_ALLOWLIST. The check runs on the resolved address that is connected to
(see console/outbound.py), and on literal addresses when a URL is saved.

No Django and no HTTP library here: the Python client ships the same file (tasks_app/client/egress.py
is a link to it), so the server and the client classify addresses alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING = "OUTBOUND_ALLOWLIST"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 prefixes whose last 32 bits are an IPv4 address the packet ends up at.
_EMBEDDING = tuple(
    ipaddress.ip_network(n)
    for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
)
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


class OutboundRefused(Exception):
    """A destination the guard will not connect to; the message is safe to show and names the setting."""


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, SIIT, NAT64, 6to4), if any."""
    if address.version == 4:
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _EMBEDDING):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: IPAddress) -> str | None:
    """What makes an address internal ('loopback', 'private', ...), or None for a public one."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.version == 4 and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def classify(address: IPAddress) -> str | None:
    """Why `address` is not public ('loopback', 'private', ...), or None when it is."""
    if address.is_loopback or address.is_unspecified:  # ::1 and :: sit inside ::/96 too
        return _kind(address)
    inner = embedded_ipv4(address)
    if inner is None:
        return _kind(address)
    # A translated address goes where its IPv4 goes (NAT64 to a public host is fine).
    inner_kind = _kind(inner)
    return f"{inner_kind} (IPv4 {inner} embedded in IPv6)" if inner_kind else None


@dataclass(frozen=True)
class Allowlist:
    """Host names (exact, or `*.domain` for its subdomains) and CIDRs that may be internal."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    nets: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        return _parse(tuple(e.strip().lower() for e in entries if e and e.strip()))

    def allows(self, host: str, address: IPAddress | None = None) -> bool:
        name = host.strip("[]").lower().rstrip(".")
        if name in self.names or any(name.endswith(s) for s in self.suffixes):
            return True
        if address is None:
            return False
        candidates = [address, embedded_ipv4(address)]
        return any(a is not None and a.version == n.version and a in n for a in candidates for n in self.nets)


@lru_cache(maxsize=8)
def _parse(entries: tuple[str, ...]) -> Allowlist:
    names, suffixes, nets = set(), [], []
    for entry in entries:
        if entry.startswith("*."):
            suffixes.append(entry[1:].rstrip("."))
            continue
        try:
            nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if "/" in entry:
                raise ValueError(f"{SETTING}: {entry!r} is neither a host name nor a CIDR") from None
            names.add(entry.rstrip("."))
    return Allowlist(frozenset(names), tuple(suffixes), tuple(nets))


def refusal(host: str, address: IPAddress, allowlist: Allowlist) -> str | None:
    """The message refusing `host` at `address`, or None when it may be connected to."""
    kind = classify(address)
    if kind is None or allowlist.allows(host, address):
        return None
    shown = host.strip("[]")
    where = f"{shown} is" if literal_address(shown) == address else f"{shown} resolves to {address},"
    article = "an" if kind[0] in "aeiou" else "a"
    return f"destination not allowed: {where} {article} {kind} address; add it to {SETTING} to allow it"


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host names without DNS: IP literals, and the legacy IPv4 forms (0x7f.1)."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_saved_url(url: str, allowlist: Allowlist) -> None:
    """Refuse a URL whose host is a literal internal address (host names are checked when connecting)."""
    host = urlsplit(url).hostname
    address = literal_address(host) if host else None
    if address is not None:
        reason = refusal(host, address, allowlist)
        if reason:
            raise OutboundRefused(reason)


async def resolve(host: str, port: int, allowlist: Allowlist) -> list[str]:
    """Resolve `host` and return its addresses, refusing if any of them is not allowed.

    All answers are checked, not just the first: a name that also resolves internally is refused.
    """
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%", 1)[0]) for i in infos))
    for address in addresses:
        reason = refusal(host, address, allowlist)
        if reason:
            raise OutboundRefused(reason)
    return [str(a) for a in addresses]

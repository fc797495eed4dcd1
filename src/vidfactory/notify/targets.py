"""Where a webhook may be sent: http(s) URLs whose host resolves only to public addresses.

Resolving happens here, once per check, and the delivery connects to the address that was checked (no
second lookup a DNS rebinding could answer differently). Private, loopback, link-local (cloud metadata
at 169.254.169.254), multicast, unspecified and reserved ranges are refused, unless the operator lists
the network in `webhook_allowed_networks`. An IPv6 address that carries an IPv4 address (mapped
::ffff:0:0/96, 6to4 2002::/16, Teredo 2001::/32, NAT64 64:ff9b::/96) is refused when the IPv4 address
it reaches would be: 2002:7f00:1:: is loopback through a 6to4 relay. Pure apart from the DNS lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["RefusedTarget", "Target", "UnresolvedHost", "check_url", "is_forbidden_address", "parse_networks",
           "resolve_target"]

url_chars_max = 2000
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedTarget(ValueError):
    """The URL is malformed, does not resolve, or resolves to an address webhooks may not reach."""


class UnresolvedHost(RefusedTarget):
    """The host does not resolve now: a delivery retries it (DNS may come back), a new target is refused."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the checked address the delivery connects to


def parse_networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def _unmapped(address: Address) -> Address:
    """::ffff:127.0.0.1 is 127.0.0.1 to the kernel, so it is judged as that."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


nat64_prefix = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to `address` may end up at, by the transition mechanism its prefix names."""
    embedded = [address.sixtofour] if address.sixtofour is not None else []
    if address.teredo is not None:
        embedded.extend(address.teredo)  # (server, client)
    if address in nat64_prefix:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


def _forbidden_alone(address: Address) -> bool:
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


def is_forbidden_address(address: Address) -> bool:
    address = _unmapped(address)
    if _forbidden_alone(address):
        return True
    return isinstance(address, ipaddress.IPv6Address) and any(map(_forbidden_alone, _embedded_ipv4(address)))


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a well-formed http(s) URL, without resolving it."""
    if len(url) > url_chars_max:
        raise RefusedTarget(f"webhook URLs are at most {url_chars_max} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedTarget(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget("webhook URLs are http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("webhook URLs carry no credentials")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7f for ch in url):
        raise RefusedTarget("webhook URLs contain no spaces or control characters")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve_target(url: str, allowed: list[Network]) -> Target:
    """Every address the host resolves to must be allowed; the first is the one to connect to."""
    scheme, host, port = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvedHost(f"host {host!r} does not resolve") from exc
    addresses = [_unmapped(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos]
    assert addresses, "getaddrinfo returns at least one address or raises"
    for address in addresses:
        if is_forbidden_address(address) and not any(address in network for network in allowed):
            raise RefusedTarget(f"host {host!r} resolves to {address}, a non-public address")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))

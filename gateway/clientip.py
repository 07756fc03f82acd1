"""The client's IP address, believing forwarding headers only from trusted proxies.

Anyone can send ``X-Forwarded-For``; only the hops we run (nginx, a load balancer) are
believed. Walking the header from the right, each address added by a trusted hop is skipped;
the first untrusted one is the client. A peer that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def _parse(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(addr: Address, proxies: Sequence[Network]) -> bool:
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in proxies)


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    real_ip: str | None,
    proxies: Sequence[Network],
) -> str | None:
    """The address to record: the right-most untrusted X-Forwarded-For hop, else X-Real-IP,
    else the peer; headers count only when the peer itself is a trusted proxy."""
    peer_addr = _parse(peer) if peer else None
    if peer_addr is None or not proxies or not _trusted(peer_addr, proxies):
        return peer
    if forwarded_for:
        last_trusted = peer_addr
        for hop in reversed(forwarded_for.split(",")):
            addr = _parse(hop)
            if addr is None:
                return str(last_trusted)  # garbage beyond a trusted hop: stop at that hop
            if not _trusted(addr, proxies):
                return str(addr)
            last_trusted = addr
        return str(last_trusted)  # every hop is ours: the left-most is the best we know
    if real_ip:
        addr = _parse(real_ip)
        if addr is not None:
            return str(addr)
    return peer

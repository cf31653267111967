"""Which addresses a node advertises: listen addresses with wildcards expanded.

A node listening on ``/ip4/0.0.0.0/tcp/7411`` is reachable on each interface's address, so
that is what goes into its capability record and its ready-to-paste ``--bootstrap`` line
(non-loopback addresses first: they are the ones another machine can use).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915


def interface_ipv4_addresses() -> list[str]:
    """IPv4 addresses of the up interfaces (Linux ioctl; loopback last)."""
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                     struct.pack("256s", name[:15].encode()))
            except OSError:
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    if "127.0.0.1" not in found:
        found.append("127.0.0.1")
    return order_addresses(found)


def order_addresses(ips: list[str]) -> list[str]:
    """De-duplicate, then put routable addresses before loopback ones."""
    unique = list(dict.fromkeys(ips))
    return sorted(unique, key=lambda ip: ipaddress.ip_address(ip).is_loopback)


def expand_wildcards(addrs: list[str], interface_ips: list[str]) -> list[str]:
    """Replace ``/ip4/0.0.0.0/`` in each address by every interface address."""
    out: list[str] = []
    for addr in addrs:
        if addr.startswith("/ip4/0.0.0.0/"):
            rest = addr[len("/ip4/0.0.0.0/"):]
            out.extend(f"/ip4/{ip}/{rest}" for ip in interface_ips)
        else:
            out.append(addr)
    return list(dict.fromkeys(out))

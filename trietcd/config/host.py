"""The host address etcd advertises when it listens on 0.0.0.0 (etcd's netutil.GetDefaultHost, IPv4 only).

etcd takes the interface of the default route and that interface's address. Reading the machine's routes
is IO, so this lives apart from parse(); the caller passes the result as parse(..., default_host=...).
"""

from __future__ import annotations

import fcntl
import socket
import struct

__all__ = ["detect_default_host"]

_SIOCGIFADDR = 0x8915


def detect_default_host(route_table: str = "/proc/net/route") -> str | None:
    """The IPv4 address of the default route's interface, or None if there is none."""
    try:
        with open(route_table, encoding="ascii") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
    except OSError:
        return None
    for row in rows:
        if len(row) >= 2 and row[1] == "00000000":
            return _interface_ipv4(row[0])
    return None


def _interface_ipv4(interface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])

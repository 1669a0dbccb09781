"""Known traffic through the loopback interface, for checking interface byte counters."""

from __future__ import annotations

import socket


def through_loopback(datagrams: int, size: int) -> None:
    """Send and receive ``datagrams`` UDP datagrams of ``size`` bytes over 127.0.0.1."""
    payload = b"x" * size
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        b.bind(("127.0.0.1", 0))
        for _ in range(datagrams):
            a.sendto(payload, b.getsockname())
            b.recv(65536)

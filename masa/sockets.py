"""Deadlines of connected sockets, kept by the kernel instead of by Python.

A Python socket with a timeout polls before every ``recv`` and ``send`` (CPython's
``sock_call_ex``): for a loopback call that is several more system calls and GIL
hand-offs per message, on each side.  Both of masa's deadlines are of that kind: the
server's idle timeout (an idle connection frees its worker) and the caller's budget.
On a quiet machine the server's alone cost about 4-5 us of CPU per call against a bare
Pyro5 call's 53 us; counted, four ``poll`` calls per call on each side (bench/RESULTS.md,
## Platform).

``SO_RCVTIMEO``/``SO_SNDTIMEO`` give a blocking socket the same deadline at no cost per
call.  When one expires the kernel answers ``EAGAIN``, which Pyro5 would take for a
spurious wake-up and retry forever (``socketutil.ERRNO_RETRIES``): the socket class
below turns it into the ``socket.timeout`` that Python's own deadline raises, so Pyro5
and masa see exactly what they saw before.  TLS sockets keep Python's deadline (OpenSSL
reports the kernel's ``EAGAIN`` as a want-read, which is not a timeout).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

_TIMEVAL = struct.Struct("@ll")  # struct timeval on Linux: seconds, microseconds (longs)


def _timeval(seconds: float | None) -> bytes:
    if seconds is None or seconds <= 0:
        return _TIMEVAL.pack(0, 0)  # no deadline
    micros = max(1, round(seconds * 1e6))  # never rounded down to 0, which means "none"
    return _TIMEVAL.pack(*divmod(micros, 1_000_000))


def _expiry_as_timeout(io: Callable) -> Callable:
    """Wrap a socket's I/O method: the kernel's EAGAIN on a blocking socket is its deadline."""

    def wrapped(self: socket.socket, *args: Any) -> Any:
        try:
            return io(self, *args)
        except BlockingIOError as exc:
            raise TimeoutError(f"timed out ({exc.strerror or 'EAGAIN'})") from None

    return wrapped


class KernelDeadlineSocket(socket.socket):
    """A blocking socket whose ``settimeout`` sets the kernel's deadlines.  None and 0
    both mean no deadline (never non-blocking: masa's connections always block)."""

    __slots__ = ()

    def settimeout(self, value: float | None) -> None:
        super().settimeout(None)
        option = _timeval(value)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, option)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, option)

    recv = _expiry_as_timeout(socket.socket.recv)
    recv_into = _expiry_as_timeout(socket.socket.recv_into)
    send = _expiry_as_timeout(socket.socket.send)
    sendall = _expiry_as_timeout(socket.socket.sendall)


def deadline_in_kernel(sock: socket.socket, seconds: float | None) -> bool:
    """Give a connected socket the deadline ``seconds`` (None: none), kept by the kernel
    where it can be; the socket's later ``settimeout`` calls then go there too.  Returns
    whether the kernel keeps it (False for TLS and other socket kinds: Python does)."""
    if type(sock) not in (socket.socket, KernelDeadlineSocket):  # an ssl.SSLSocket among them
        sock.settimeout(seconds)
        return False
    sock.__class__ = KernelDeadlineSocket
    sock.settimeout(seconds)
    return True

"""What every server a test starts needs: free loopback ports, and death with the process that started it."""

from __future__ import annotations

import ctypes
import signal
import socket

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that are free now (all held open together, so never the same)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    return free_ports(1)[0]


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the process that started it dies (no orphaned servers)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

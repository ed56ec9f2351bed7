"""The listening socket of a server, bound before anything slow starts so a taken port is one line."""

from __future__ import annotations

import socket

from researchrl.errors import UserError


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port), or a UserError naming why not (taken, not ours, out of range)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {getattr(err, 'strerror', None) or err}") from None
    return sock

"""Whether the gRPC address can be bound, asked before any model is loaded: a port in use fails in a moment, with
one line of ours (gRPC core would log its own `add_port.cc` error line first, and only after every warm-up)."""

from __future__ import annotations

import errno
import socket

from cnnserve.server.errors import StartupError

PORT_HINT = "choose another --port (0 picks a free one)"


def check_bindable(host: str, port: int) -> None:
    """StartupError naming the address and the fix when host:port cannot be bound now. Port 0 always can."""
    if port == 0:
        return
    address = f"{host}:{port}"
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {address}: {exc.strerror}; expected an interface address") from exc
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: SO_REUSEADDR, so a port whose old connections linger in TIME_WAIT still counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(f"cannot listen on {address}: the port is in use; {PORT_HINT}") from exc
                raise StartupError(f"cannot listen on {address}: {exc.strerror or exc}") from exc

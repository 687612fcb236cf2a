"""The gRPC transport: the server object the services are registered on, its options, and how it binds its port.

`app` builds the server only through `create_server` and `bind`, so nothing else in the server knows which
transport runs, what it is configured with, or how its port is secured.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError


def server_options(config: ServerConfig, reuse_port: bool) -> list[tuple[str, int]]:
    """The channel arguments the gRPC server is created with."""
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        # grpc turns SO_REUSEPORT on by default, which lets a second server bind a port already in use and
        # silently share it: "port in use" must be a startup error, except for --workers, who share on purpose.
        ("grpc.so_reuseport", int(reuse_port)),
    ]


def create_server(
    config: ServerConfig, *, reuse_port: bool = False, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
) -> grpc.aio.Server:
    """A new, unstarted server; the services are added to it before `bind`."""
    return grpc.aio.server(options=server_options(config, reuse_port), interceptors=list(interceptors) or None)


def bind(
    server: grpc.aio.Server,
    config: ServerConfig,
    credentials: grpc.ServerCredentials | None = None,
    *,
    port: int | None = None,
) -> int:
    """Listen on config.host:port (default config.port), with TLS when `credentials` are given; the port really
    bound (the ephemeral one for port 0). StartupError when the address cannot be bound."""
    address = f"{config.host}:{config.port if port is None else port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # recent grpcio raises; older ones return 0
        raise StartupError(f"cannot listen on {address}: {exc}") from exc
    if bound == 0:
        raise StartupError(f"cannot listen on {address}: the address is in use or invalid")
    return bound

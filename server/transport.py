"""The gRPC transport: the server object the services are registered on, its options, and how it binds its port.

`app` builds the server only through `create_server` and `bind`, so nothing else in the server knows which
transport runs, what it is configured with, or how its port is secured.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from cnnserve.server.config import DEFAULT_MAX_MESSAGE_BYTES, ServerConfig
from cnnserve.server.errors import StartupError

_CONNECTION_AGE_GRACE_MS = 30_000  # calls still running when a connection reaches --max-connection-age-s


def server_options(config: ServerConfig, reuse_port: bool, message_bytes: int | None = None) -> list[tuple[str, int]]:
    """The channel arguments the gRPC server is created with. `message_bytes`: the message limit, when
    config.max_message_bytes is 0 (automatic) and the caller sized it to the models (repository.message_bytes)."""
    message_bytes = config.max_message_bytes or message_bytes or DEFAULT_MAX_MESSAGE_BYTES
    options = [
        ("grpc.max_send_message_length", message_bytes),
        ("grpc.max_receive_message_length", message_bytes),
        # grpc turns SO_REUSEPORT on by default, which lets a second server bind a port already in use and
        # silently share it: "port in use" must be a startup error, except for --workers, who share on purpose.
        ("grpc.so_reuseport", int(reuse_port)),
        # What one client connection may hold: streams beyond this wait in the client, not in the server.
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        # Keepalive: find dead peers, and refuse clients that ping too often (GOAWAY too_many_pings after 2).
        ("grpc.keepalive_time_ms", _ms(config.keepalive_time_s) or 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(config.keepalive_min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if config.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", _ms(config.max_connection_idle_s)))
    if config.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", _ms(config.max_connection_age_s)))
        options.append(("grpc.max_connection_age_grace_ms", _CONNECTION_AGE_GRACE_MS))
    return options


def _ms(seconds: float) -> int:
    return min(2**31 - 1, round(seconds * 1000))


def create_server(
    config: ServerConfig,
    *,
    reuse_port: bool = False,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    message_bytes: int | None = None,
) -> grpc.aio.Server:
    """A new, unstarted server; the services are added to it before `bind`."""
    options = server_options(config, reuse_port, message_bytes)
    return grpc.aio.server(options=options, interceptors=list(interceptors) or None)


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
    hint = "choose another --port" if port is None else "choose another port"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # recent grpcio raises; older ones return 0
        raise StartupError(f"cannot listen on {address}: {exc} ({hint})") from exc
    if bound == 0:
        raise StartupError(f"cannot listen on {address}: the address is in use or invalid ({hint})")
    return bound

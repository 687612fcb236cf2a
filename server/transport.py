"""The gRPC transport: which server runs (grpc.aio or pygrpc-native's), its options, and how it binds its port.

`app` builds the server only through `create_server` and `bind`, so nothing else in the server knows which
transport runs, what it is configured with, or how its port is secured. `choose` is the one place that decides.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

from cnnserve.server.config import DEFAULT_MAX_MESSAGE_BYTES, ServerConfig, available_cores
from cnnserve.server.errors import StartupError

logger = logging.getLogger(__name__)

Running = Literal["grpcio", "native"]

# grpc-core's default hard limit on a request's metadata (the sum of key + value + 32 bytes per entry), over which
# grpcio answers RESOURCE_EXHAUSTED. pygrpc-native answers HTTP 431 instead (clients see UNKNOWN); so the native
# front gets a higher limit and the guard (server/guard.py) refuses, with grpcio's status, what grpcio refuses.
METADATA_LIMIT_BYTES = 16 * 1024
NATIVE_METADATA_CAP_BYTES = 64 * 1024
_CONNECTION_AGE_GRACE_MS = 30_000  # calls still running when a connection reaches --max-connection-age-s


@dataclass(frozen=True, slots=True)
class Choice:
    """The transport that serves, and why (the start-up log line says both)."""

    transport: Running
    reason: str


def native_installed() -> bool:
    """Whether pygrpc-native can be imported here (it ships wheels for Linux x86_64/aarch64 and macOS)."""
    return importlib.util.find_spec("pygrpc_native") is not None


def native_refusals(config: ServerConfig, listeners: int = 1) -> list[str]:
    """What the native transport cannot serve of `config` and `listeners` (addresses the server listens on), each
    a reason; empty when it can serve all of it.

    pygrpc-native binds one address, has no TLS and raises on connection age/idle limits, incoming-connection
    caps, response compression and maximum_concurrent_rpcs; a check for each such setting belongs here.
    """
    refusals = []
    if config.tls:
        refusals.append("TLS (--tls-cert): it has none yet")
    if config.max_connection_idle_s > 0 or config.max_connection_age_s > 0:
        # Nearest native equivalent: none (keepalive still finds dead peers); --max-connection-idle-s 0 and
        # --max-connection-age-s 0 (their "never") let native serve.
        refusals.append("connection idle/age limits (--max-connection-idle-s, --max-connection-age-s): it has none")
    if listeners > 1:
        # --workers with explicit model control: each worker also listens on a Unix socket for forwarded loads
        refusals.append(
            f"{listeners} listeners (the Unix socket of explicit model control with --workers); it binds one"
        )
    return refusals


def choose(config: ServerConfig, *, installed: bool | None = None, listeners: int = 1) -> Choice:
    """The transport for `config`: its --transport, or for `auto` native when installed and allowed, else grpcio.

    StartupError when --transport native is asked for and cannot run.
    """
    installed = native_installed() if installed is None else installed
    refusals = native_refusals(config, listeners)
    if config.transport == "grpcio":
        return Choice("grpcio", "--transport grpcio")
    if config.transport == "native":
        if not installed:
            raise StartupError(
                "--transport native needs the pygrpc-native package, which is not installed (the `server` extra "
                "installs it on Linux x86_64 and aarch64); use --transport grpcio or auto"
            )
        if refusals:
            raise StartupError(f"--transport native cannot serve this configuration: {'; '.join(refusals)}")
        return Choice("native", "--transport native")
    if not installed:
        return Choice("grpcio", "auto: pygrpc-native is not installed")
    if refusals:
        return Choice("grpcio", f"auto: the native transport cannot serve {'; '.join(refusals)}")
    return Choice("native", "auto: pygrpc-native is installed and serves this configuration")


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


def guard_metadata_bytes(server: grpc.aio.Server) -> int | None:
    """The request-metadata limit the guard must enforce on `server` (METADATA_LIMIT_BYTES on the native
    transport, whose front would answer HTTP 431 instead), or None where grpcio enforces it itself. In the guard
    rather than an interceptor: pygrpc-native runs interceptors per call as a chain of coroutines."""
    if not native_installed():
        return None
    import pygrpc_native.aio

    return METADATA_LIMIT_BYTES if isinstance(server, pygrpc_native.aio.Server) else None


def native_io_threads() -> int:
    """Tokio threads of the native front: its default 2, but 1 on a machine of 2 cores or fewer, where a second
    one only competes with Python and onnxruntime (benchmarks/RESULTS.md, "What was tried on the native
    transport", has the figures)."""
    return 1 if available_cores() <= 2 else 2


def create_server(
    config: ServerConfig,
    *,
    reuse_port: bool = False,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    listeners: int = 1,
    message_bytes: int | None = None,
) -> grpc.aio.Server:
    """A new, unstarted server on the chosen transport; the services are added to it before `bind`. `listeners`:
    how many addresses it will listen on (`bind`'s, and any the caller adds with add_insecure_port); `message_bytes`:
    the message limit sized to the models, for --max-message-bytes 0."""
    choice = choose(config, listeners=listeners)
    options = server_options(config, reuse_port, message_bytes)
    if choice.transport == "grpcio":
        logger.info("gRPC server: grpcio %s (%s)", grpc.__version__, choice.reason)
        return grpc.aio.server(options=options, interceptors=list(interceptors) or None)
    import pygrpc_native
    import pygrpc_native.aio

    logger.info("gRPC server: native, pygrpc-native %s (%s)", pygrpc_native.__version__, choice.reason)
    try:
        server: grpc.aio.Server = pygrpc_native.aio.Server(
            options=[*options, ("grpc.absolute_max_metadata_size", NATIVE_METADATA_CAP_BYTES)],
            interceptors=list(interceptors) or None,
            io_threads=native_io_threads(),
        )
    except (ValueError, NotImplementedError) as exc:  # an option it refuses that native_refusals missed
        raise StartupError(f"the native transport refused its configuration: {exc}") from exc
    return server


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
    except RuntimeError as exc:  # recent grpcio and pygrpc-native raise; older grpcio returns 0
        cause = exc.__cause__ or exc
        raise StartupError(f"cannot listen on {address}: {cause} ({hint})") from exc
    if bound == 0:
        raise StartupError(f"cannot listen on {address}: the address is in use or invalid ({hint})")
    return bound

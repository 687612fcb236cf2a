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

from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError

logger = logging.getLogger(__name__)

Running = Literal["grpcio", "native"]


@dataclass(frozen=True, slots=True)
class Choice:
    """The transport that serves, and why (the start-up log line says both)."""

    transport: Running
    reason: str


def native_installed() -> bool:
    """Whether pygrpc-native can be imported here (it ships wheels for Linux x86_64/aarch64 and macOS)."""
    return importlib.util.find_spec("pygrpc_native") is not None


def native_refusals(config: ServerConfig) -> list[str]:
    """What in `config` the native transport cannot serve (each a reason); empty when it can serve all of it.

    pygrpc-native has no TLS and raises on connection age/idle limits, incoming-connection caps, response
    compression and maximum_concurrent_rpcs; a check for each such setting of ServerConfig belongs here.
    """
    refusals = []
    if config.tls:
        refusals.append("TLS (--tls-cert): it has none yet")
    return refusals


def choose(config: ServerConfig, *, installed: bool | None = None) -> Choice:
    """The transport for `config`: its --transport, or for `auto` native when installed and allowed, else grpcio.

    StartupError when --transport native is asked for and cannot run.
    """
    installed = native_installed() if installed is None else installed
    refusals = native_refusals(config)
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


def server_options(config: ServerConfig, reuse_port: bool) -> list[tuple[str, int]]:
    """The channel arguments the gRPC server is created with (both transports read the same ones)."""
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
    """A new, unstarted server on the chosen transport; the services are added to it before `bind`."""
    choice = choose(config)
    options = server_options(config, reuse_port)
    if choice.transport == "grpcio":
        logger.info("transport: grpcio %s (%s)", grpc.__version__, choice.reason)
        return grpc.aio.server(options=options, interceptors=list(interceptors) or None)
    import pygrpc_native
    import pygrpc_native.aio

    logger.info("transport: native, pygrpc-native %s (%s)", pygrpc_native.__version__, choice.reason)
    try:
        server: grpc.aio.Server = pygrpc_native.aio.server(options=options, interceptors=list(interceptors) or None)
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
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # recent grpcio and pygrpc-native raise; older grpcio returns 0
        cause = exc.__cause__ or exc
        raise StartupError(f"cannot listen on {address}: {cause}") from exc
    if bound == 0:
        raise StartupError(f"cannot listen on {address}: the address is in use or invalid")
    return bound

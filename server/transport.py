"""The gRPC transport: which server runs (grpc.aio or pygrpc-native's), its options, and how it binds its port.

`app` builds the server only through `create_server` and `bind`, so nothing else in the server knows which
transport runs, what it is configured with, or how its port is secured. `choose` is the one place that decides.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from cnnserve.server.config import ServerConfig, available_cores
from cnnserve.server.errors import StartupError

logger = logging.getLogger(__name__)

Running = Literal["grpcio", "native"]

# grpc-core's default hard limit on a request's metadata (the sum of key + value + 32 bytes per entry), over which
# grpcio answers RESOURCE_EXHAUSTED. pygrpc-native answers HTTP 431 instead (clients see UNKNOWN); so the native
# front gets a higher limit and _MetadataLimit refuses, with grpcio's status, what grpcio refuses.
METADATA_LIMIT_BYTES = 16 * 1024
NATIVE_METADATA_CAP_BYTES = 64 * 1024


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


def server_options(config: ServerConfig, reuse_port: bool) -> list[tuple[str, int]]:
    """The channel arguments the gRPC server is created with (both transports read the same ones)."""
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        # grpc turns SO_REUSEPORT on by default, which lets a second server bind a port already in use and
        # silently share it: "port in use" must be a startup error, except for --workers, who share on purpose.
        ("grpc.so_reuseport", int(reuse_port)),
    ]


class _MetadataLimit(grpc.aio.ServerInterceptor):
    """RESOURCE_EXHAUSTED for a call whose request metadata is over METADATA_LIMIT_BYTES, as grpcio answers."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        size = sum(len(key) + len(value) + 32 for key, value in details.invocation_metadata or ())
        if size <= METADATA_LIMIT_BYTES or handler is None:
            return handler
        message = f"request metadata is {size} bytes; at most {METADATA_LIMIT_BYTES} accepted"

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

        kinds = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }
        make = kinds[(handler.request_streaming, handler.response_streaming)]
        refusal: grpc.RpcMethodHandler = make(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return refusal


def native_io_threads() -> int:
    """Tokio threads of the native front: its default 2, but 1 on a machine of 2 cores or fewer, where a second
    one only competes with Python and onnxruntime (measured on 2 cores, perf_analyzer 32 x 1: +8-13% unary
    calls/s, +5-10% over streams, lower p99)."""
    return 1 if available_cores() <= 2 else 2


def create_server(
    config: ServerConfig,
    *,
    reuse_port: bool = False,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    listeners: int = 1,
) -> grpc.aio.Server:
    """A new, unstarted server on the chosen transport; the services are added to it before `bind`. `listeners`:
    how many addresses it will listen on (`bind`'s, and any the caller adds with add_insecure_port)."""
    choice = choose(config, listeners=listeners)
    options = server_options(config, reuse_port)
    if choice.transport == "grpcio":
        logger.info("gRPC server: grpcio %s (%s)", grpc.__version__, choice.reason)
        return grpc.aio.server(options=options, interceptors=list(interceptors) or None)
    import pygrpc_native
    import pygrpc_native.aio

    logger.info("gRPC server: native, pygrpc-native %s (%s)", pygrpc_native.__version__, choice.reason)
    try:
        server: grpc.aio.Server = pygrpc_native.aio.Server(
            options=[*options, ("grpc.absolute_max_metadata_size", NATIVE_METADATA_CAP_BYTES)],
            interceptors=[_MetadataLimit(), *interceptors],
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

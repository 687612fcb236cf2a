"""Explicit model control across `--workers N`: a load or unload RPC that reaches one worker is applied there and
then forwarded to every other worker over its private Unix socket, so no worker is left behind.

The supervisor gives each worker a socket path in a private temporary folder (mode 0700) and the paths of the
others. A forwarded call carries the metadata FORWARDED and is not forwarded again; the RPC answers once every
worker has applied the change (or with the first worker's error, naming it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.errors import PeerError

if TYPE_CHECKING:
    from cnnserve.server.state import ServerState

logger = logging.getLogger(__name__)

FORWARDED = "cnnserve-forwarded"  # metadata key of a call one worker passes to another
_FORWARD_TIMEOUT_S = 600.0  # a load warms every batch size: minutes on a slow machine for a large model


def socket_target(path: str) -> str:
    return f"unix://{path}"


async def forward(state: ServerState, context: grpc.aio.ServicerContext, method: str, request: Any) -> None:
    """Pass `request` to `method` of every peer worker (unless it came from one), concurrently; PeerError if any
    fails."""
    received = tuple(context.invocation_metadata() or ())
    if not state.peer_sockets or any(key == FORWARDED for key, _ in received):
        return
    # the caller's credentials travel on, so a worker that checks tokens accepts the forwarded call
    metadata = (*((key, value) for key, value in received if key == "authorization"), (FORWARDED, "1"))

    async def one(path: str) -> None:
        async with grpc.aio.insecure_channel(socket_target(path)) as channel:
            rpc = getattr(pb_grpc.GRPCInferenceServiceStub(channel), method)
            await rpc(request, metadata=metadata, timeout=_FORWARD_TIMEOUT_S, wait_for_ready=True)

    results = await asyncio.gather(*(one(path) for path in state.peer_sockets), return_exceptions=True)
    for path, result in zip(state.peer_sockets, results, strict=True):
        if isinstance(result, grpc.aio.AioRpcError):
            raise PeerError(f"applied here, but the worker at {path} answered {result.code().name}: {result.details()}")
        if isinstance(result, BaseException):
            raise PeerError(f"applied here, but the worker at {path} could not be reached: {result}")
    logger.info("%s applied by %d other workers", method, len(state.peer_sockets))

"""The one error mapping of @rpc_servicer, on a real grpc.aio server: CnnserveError -> its status and message,
anything else -> INTERNAL with the traceback in the server log, in unary and streaming methods alike."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.errors import QueueFullError
from cnnserve.server.statuses import rpc_servicer


@rpc_servicer
class Failing(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        raise QueueFullError("queue of model m is full (4 requests); expected fewer requests in flight")

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        raise KeyError("a bug: not a CnnserveError")

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        yield pb.ModelStreamInferResponse(error_message="first")
        raise QueueFullError("full after the first answer")


async def call_all() -> list[tuple[grpc.StatusCode, str, int]]:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    outcomes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for call in (stub.ServerLive(pb.ServerLiveRequest()), stub.ServerReady(pb.ServerReadyRequest())):
                try:
                    await call
                except grpc.aio.AioRpcError as error:
                    outcomes.append((error.code(), error.details() or "", 0))
            received = 0
            try:
                async for _ in stub.ModelStreamInfer(iter([pb.ModelInferRequest()])):
                    received += 1
            except grpc.aio.AioRpcError as error:
                outcomes.append((error.code(), error.details() or "", received))
    finally:
        await server.stop(None)
    return outcomes


def test_errors_become_statuses_and_bugs_become_internal_with_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="cnnserve.server.faults"):
        live, ready, stream = asyncio.run(call_all())
    assert live == (
        grpc.StatusCode.UNAVAILABLE,
        "queue of model m is full (4 requests); expected fewer requests in flight",
        0,
    )
    # The client gets a reference, not the exception's text; the log has both.
    assert ready[0] == grpc.StatusCode.INTERNAL and "server log reference" in ready[1] and "KeyError" not in ready[1]
    assert stream == (grpc.StatusCode.UNAVAILABLE, "full after the first answer", 1)
    (record,) = [r for r in caplog.records if "Failing.ServerReady" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert ready[1].split("reference ")[1].split(")")[0] in record.getMessage()

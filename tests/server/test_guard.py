"""guard_server on a real grpc.aio server: undecodable request bytes are INVALID_ARGUMENT, calls over the
concurrency limit RESOURCE_EXHAUSTED, and the probes are never refused (the whole server: test_limits.py)."""

from __future__ import annotations

import asyncio

import grpc

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.guard import CallLimit, guard_server


class Slow(pb_grpc.GRPCInferenceServiceServicer):
    """ServerMetadata waits until released, so a second call finds the limit taken."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        self.entered.set()
        await self.release.wait()
        return pb.ServerMetadataResponse(name="slow")

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)


def test_the_probes_are_exempt_from_the_limit() -> None:
    limit = CallLimit(1)
    assert limit.applies_to("/inference.GRPCInferenceService/ModelInfer")
    assert not limit.applies_to("/inference.GRPCInferenceService/ServerReady")
    assert not limit.applies_to("/grpc.health.v1.Health/Check")
    assert "--max-concurrent-rpcs" in limit.refusal()


async def guarded_calls() -> tuple[grpc.StatusCode, str, bool, str, grpc.StatusCode, str]:
    servicer = Slow()
    server = grpc.aio.server()
    guard_server(server, CallLimit(1))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = stub.ServerMetadata(pb.ServerMetadataRequest())
            await asyncio.wait_for(servicer.entered.wait(), 10)
            try:
                await stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
                refused = (grpc.StatusCode.OK, "")
            except grpc.aio.AioRpcError as error:
                refused = (error.code(), error.details() or "")
            probe = await stub.ServerReady(pb.ServerReadyRequest(), timeout=10)
            servicer.release.set()
            name = (await first).name
            garbage = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
            try:
                await garbage(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
                undecodable = (grpc.StatusCode.OK, "")
            except grpc.aio.AioRpcError as error:
                undecodable = (error.code(), error.details() or "")
    finally:
        await server.stop(None)
    return (*refused, probe.ready, name, *undecodable)


def test_calls_over_the_limit_are_refused_and_garbage_is_invalid_argument() -> None:
    code, message, probe_ready, first_answer, garbage_code, garbage_message = asyncio.run(guarded_calls())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 1 concurrent calls" in message
    assert probe_ready and first_answer == "slow"  # the probe answered meanwhile; the first call finished
    assert garbage_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message for /inference.GRPCInferenceService/ServerReady" in garbage_message

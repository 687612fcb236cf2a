"""control.forward, between real grpc.aio servers on unix sockets: a load or unload applied by one worker goes to
every other worker once (with the caller's token), never back again, and a worker that fails it is a PeerError
naming that worker (the workers themselves: test_workers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server import control
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import PeerError
from cnnserve.server.repository import ModelRepository
from cnnserve.server.state import ServerState


class Peer(pb_grpc.GRPCInferenceServiceServicer):
    """A worker that records the loads it is given, or refuses them."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.loads: list[tuple[str, dict[str, str]]] = []

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.loads.append((request.model_name, metadata))
        if self.refuse:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no version of m loads")
        return pb.RepositoryModelLoadResponse()


class Front(pb_grpc.GRPCInferenceServiceServicer):
    """The worker a client called: it forwards, and answers what forward raised."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        try:
            await control.forward(self.state, context, "RepositoryModelLoad", request)
        except PeerError as error:
            await context.abort(grpc.StatusCode[error.status], str(error))
        return pb.RepositoryModelLoadResponse()


async def load_through(
    state: ServerState, peers: dict[str, Peer], metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode | str:
    servers = []
    for path, peer in peers.items():
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(peer, server)
        server.add_insecure_port(control.socket_target(path))
        servers.append(server)
    front = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Front(state), front)
    port = front.add_insecure_port("127.0.0.1:0")
    servers.append(front)
    for server in servers:
        await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            try:
                await stub.RepositoryModelLoad(
                    pb.RepositoryModelLoadRequest(model_name="m"), metadata=metadata, timeout=20
                )
            except grpc.aio.AioRpcError as error:
                return error.details() or error.code()
            return grpc.StatusCode.OK
    finally:
        for server in servers:
            await server.stop(None)


@pytest.fixture
def repository(linear_repository: Path) -> Iterator[ModelRepository]:
    loaded = ModelRepository.load(ServerConfig(model_repository=linear_repository, max_batch_size=8))
    yield loaded
    loaded.close()


def test_a_change_goes_to_every_other_worker_once_with_the_callers_token(
    repository: ModelRepository, tmp_path: Path
) -> None:
    peers = {str(tmp_path / "a.sock"): Peer(), str(tmp_path / "b.sock"): Peer()}
    state = ServerState(repository.config, repository, peer_sockets=tuple(peers))
    outcome = asyncio.run(load_through(state, peers, (("authorization", "Bearer t"),)))
    assert outcome == grpc.StatusCode.OK
    for peer in peers.values():
        ((name, metadata),) = peer.loads
        assert name == "m" and metadata["authorization"] == "Bearer t" and metadata[control.FORWARDED] == "1"


def test_a_forwarded_change_is_not_forwarded_again(repository: ModelRepository, tmp_path: Path) -> None:
    peers = {str(tmp_path / "a.sock"): Peer()}
    state = ServerState(repository.config, repository, peer_sockets=tuple(peers))
    assert asyncio.run(load_through(state, peers, ((control.FORWARDED, "1"),))) == grpc.StatusCode.OK
    assert peers[str(tmp_path / "a.sock")].loads == []


def test_a_worker_that_fails_the_change_is_a_peer_error_naming_it(repository: ModelRepository, tmp_path: Path) -> None:
    bad = str(tmp_path / "bad.sock")
    peers = {str(tmp_path / "good.sock"): Peer(), bad: Peer(refuse=True)}
    state = ServerState(repository.config, repository, peer_sockets=tuple(peers))
    outcome = asyncio.run(load_through(state, peers, ()))
    assert outcome == f"applied here, but the worker at {bad} answered FAILED_PRECONDITION: no version of m loads"

"""Standard gRPC health checking (grpc.health.v1, overall and per model) and server reflection
(grpc.reflection.v1 and v1alpha).

Health service names: "" is the whole server (SERVING while at least one model version is READY and the server
is not draining) and "<model name>" is one model (SERVING while it has a READY version and the server is not
draining). A version whose batches keep failing is not READY until one succeeds again (`refresh`). Reflection
(on by default on loopback, `--reflection`) lists every service the server offers, so grpcurl and grpc_cli work
without .proto files. `add_health_only` puts the same health state on a second server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in its stubs
from grpc_reflection.v1alpha import reflection

from cnnserve.proto import classifier_pb2, grpc_service_pb2
from cnnserve.server import reflection_v1

if TYPE_CHECKING:
    from cnnserve.server.state import ServerState

#: Every service a cnnserve server offers, by full name (what reflection lists).
SERVICE_NAMES = (
    classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name,
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
    reflection_v1.SERVICE_NAME,
)
OVERALL = ""  # the health service name of the whole server

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthHandle:
    """What app uses to move health with the server's life: `await set_serving(True)` once started, False on
    drain. Per-model statuses follow the repository (a model without a READY version is NOT_SERVING)."""

    def __init__(self, servicer: health_aio.HealthServicer, state: ServerState) -> None:
        self._servicer = servicer
        self._state = state
        self._serving = False
        self._names: set[str] = set()  # every model name ever set: one that left the repository is NOT_SERVING

    def add_health_only(self, server: grpc.aio.Server) -> None:
        """Serve this same health state (and nothing else) on another server: the --health-port listener."""
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        repository = self._state.repository
        await self._servicer.set(OVERALL, _SERVING if serving and self._state.ready else _NOT_SERVING)
        self._names |= {status.name for status in repository.statuses()}
        for name in sorted(self._names):
            ready = serving and self._state.model_ready(name)
            await self._servicer.set(name, _SERVING if ready else _NOT_SERVING)

    async def refresh(self) -> None:
        """The repository changed (a version loaded or left): statuses follow it."""
        await self.set_serving(self._serving)


def add_to_server(server: grpc.aio.Server, state: ServerState) -> HealthHandle:
    """Register grpc.health.v1.Health and (when config.reflection) reflection on `server`; app must
    `await handle.set_serving(True)`."""
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if state.config.reflection:
        reflection.enable_server_reflection(SERVICE_NAMES, server, pool=reflection_v1.POOL)
        reflection_v1.add_to_server(server, SERVICE_NAMES)
    return HealthHandle(servicer, state)

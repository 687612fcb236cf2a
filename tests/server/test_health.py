"""grpc.health.v1 on a real server: the whole server ("") and each model by name, including one that failed to load."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.proto import classifier_pb2 as cpb
from cnnserve.proto import classifier_pb2_grpc as cpb_grpc
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    status: int = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status
    return status


def test_the_server_and_every_ready_model_are_serving(running_server: Any) -> None:
    with grpc.insecure_channel(running_server.address) as channel:
        assert check(channel, "") == SERVING
        for status in running_server.state.repository.statuses():
            assert check(channel, status.name) == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            check(channel, "no_such_model")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
def half_broken_server(write_version: Callable[..., Path], tmp_path: Path) -> Iterator[Any]:
    """A server with `linear` (fine) and `broken` (its model.onnx is not ONNX, so it never loads)."""
    write_version("linear")
    write_version("broken", onnx_bytes=b"this is not an onnx file")
    config = ServerConfig(model_repository=tmp_path / "models", port=0, metrics_port=-1, default_model="linear")
    with serve_in_thread(config) as server:
        yield server


def test_a_model_that_failed_to_load_is_not_serving_and_says_why(half_broken_server: Any) -> None:
    with grpc.insecure_channel(half_broken_server.address) as channel:
        assert check(channel, "") == SERVING
        assert check(channel, "linear") == SERVING
        assert check(channel, "broken") == NOT_SERVING
        oip = pb_grpc.GRPCInferenceServiceStub(channel)
        assert not oip.ModelReady(pb.ModelReadyRequest(name="broken"), timeout=10).ready
        index = {m.name: m for m in oip.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10).models}
        assert index["broken"].state == "UNAVAILABLE" and index["broken"].reason
        assert [m.name for m in oip.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=10).models] == [
            "linear"
        ]
        listed = cpb_grpc.ClassifierStub(channel).ListModels(cpb.ListModelsRequest(), timeout=10)
        assert listed.default_model == "linear"
        broken = next(m for m in listed.models if m.name == "broken")
        assert broken.state == "UNAVAILABLE" and broken.reason == index["broken"].reason and not broken.labels
        with pytest.raises(grpc.RpcError) as refused:
            oip.ModelConfig(pb.ModelConfigRequest(name="broken"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not ready" in (refused.value.details() or "") or "no READY version" in (refused.value.details() or "")

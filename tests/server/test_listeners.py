"""What a server exposes beside its main port: the plaintext health-only listener (--health-port) with the same
health state, reflection on or off (default from the host), and the metrics endpoint's own host (--metrics-host)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cnnserve.proto import classifier_pb2 as pb
from cnnserve.proto import classifier_pb2_grpc as pb_grpc
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig, parse_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_of(channel: grpc.Channel, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status)


def reflection_code(channel: grpc.Channel) -> grpc.StatusCode:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=10))
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def secured_server(
    grayscale_repository: Path, certificates: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """TLS and tokens on the main port, health only in plaintext on another (what a Kubernetes probe needs)."""
    tokens = tmp_path_factory.mktemp("listeners") / "tokens"
    tokens.write_text("a-token\n")
    config = ServerConfig(
        model_repository=grayscale_repository,
        port=0,
        metrics_port=-1,
        health_port=0,
        grace_period_s=1.0,
        tls_cert=certificates.server_pem,
        tls_key=certificates.server_key,
        auth_token_file=tokens,
    )
    with serve_in_thread(config) as server:
        yield server


def set_serving(server: Any, serving: bool) -> None:
    """Move the server's health as start-up and drain do (on the server's own loop)."""
    handle = server._server._health
    asyncio.run_coroutine_threadsafe(handle.set_serving(serving), server._loop).result(10)


def test_the_health_port_serves_the_same_health_in_plaintext_and_nothing_else(secured_server: RunningServer) -> None:
    assert secured_server.health_port not in (None, 0, secured_server.port)
    model = next(iter(secured_server.state.repository.served())).name
    with grpc.insecure_channel(f"127.0.0.1:{secured_server.health_port}") as channel:
        assert health_of(channel) == SERVING and health_of(channel, model) == SERVING  # no TLS, no token
        set_serving(secured_server, False)
        try:
            assert health_of(channel) == NOT_SERVING and health_of(channel, model) == NOT_SERVING
        finally:
            set_serving(secured_server, True)
        assert health_of(channel) == SERVING
        with pytest.raises(grpc.RpcError) as other:
            pb_grpc.ClassifierStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
        assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert reflection_code(channel) == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_follows_the_flag(grayscale_repository: Path) -> None:
    config = ServerConfig(model_repository=grayscale_repository, port=0, metrics_port=-1, reflection=False)
    with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
        assert reflection_code(channel) == grpc.StatusCode.UNIMPLEMENTED
        assert health_of(channel) == SERVING


def test_on_every_interface_reflection_is_off_and_metrics_stay_on_loopback(grayscale_repository: Path) -> None:
    config = ServerConfig(model_repository=grayscale_repository, host="0.0.0.0", port=0, metrics_port=0)
    assert config.reflection is False and config.metrics_host == "127.0.0.1"
    with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
        assert reflection_code(channel) == grpc.StatusCode.UNIMPLEMENTED
        assert server.state.metrics is not None
        assert server.state.metrics._http is not None
        assert server.state.metrics._http.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
            assert b"nv_inference_count" in response.read()


def test_reflection_and_metrics_host_flags_and_variables(tmp_path: Path) -> None:
    repository = ["--model-repository", str(tmp_path)]
    assert parse_config(repository, environ={}).reflection is True  # 127.0.0.1
    assert parse_config([*repository, "--host", "::1"], environ={}).reflection is True
    assert parse_config([*repository, "--host", "0.0.0.0"], environ={}).reflection is False
    assert parse_config([*repository, "--host", "0.0.0.0", "--reflection", "on"], environ={}).reflection is True
    assert parse_config(repository, environ={"CNNSERVE_REFLECTION": "off"}).reflection is False
    exposed = parse_config(repository, environ={"CNNSERVE_HOST": "0.0.0.0", "CNNSERVE_METRICS_HOST": "0.0.0.0"})
    assert exposed.metrics_host == "0.0.0.0"
    with pytest.raises(SystemExit):
        parse_config([*repository, "--reflection", "maybe"], environ={})
    from cnnserve.errors import ConfigError

    with pytest.raises(ConfigError, match="health_port must differ"):
        parse_config([*repository, "--health-port", "8001"], environ={})

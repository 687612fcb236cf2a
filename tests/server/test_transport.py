"""The transport seam: --transport grpcio|native|auto, which one `auto` picks and why, and that both answer alike.

The whole of tests/server runs on both transports (`make test` runs it again with `--transport grpcio`); these
tests pin the choice itself and compare the two side by side on one request of each kind.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.errors import ConfigError
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server import transport
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig, parse_config
from cnnserve.server.errors import StartupError

native_only = pytest.mark.skipif(not transport.native_installed(), reason="pygrpc-native is not installed here")


def config(repository: Path, name: str, *, idle_s: float = 0.0) -> ServerConfig:
    """A server on transport `name`; without the connection idle limit unless asked (native has none)."""
    return ServerConfig(
        model_repository=repository,
        port=0,
        metrics_port=-1,
        transport=name,  # type: ignore[arg-type]
        max_connection_idle_s=idle_s,
    )


def test_auto_takes_native_when_installed_and_says_why(tmp_path: Path) -> None:
    auto = config(tmp_path, "auto")
    assert transport.choose(auto, installed=True) == transport.Choice(
        "native", "auto: pygrpc-native is installed and serves this configuration"
    )
    assert transport.choose(auto, installed=False) == transport.Choice("grpcio", "auto: pygrpc-native is not installed")
    assert transport.choose(config(tmp_path, "grpcio"), installed=True).transport == "grpcio"
    assert transport.choose(config(tmp_path, "native"), installed=True).transport == "native"


def test_connection_idle_and_age_limits_keep_auto_on_grpcio(tmp_path: Path) -> None:
    refusal = "connection idle/age limits (--max-connection-idle-s, --max-connection-age-s): it has none"
    defaults = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    assert defaults["max_connection_idle_s"] == defaults["max_connection_age_s"] == 0  # so the default is native
    assert transport.choose(config(tmp_path, "auto"), installed=True).transport == "native"
    idle = config(tmp_path, "auto", idle_s=300)
    assert transport.choose(idle, installed=True) == transport.Choice(
        "grpcio", f"auto: the native transport cannot serve {refusal}"
    )
    aged = dataclasses.replace(config(tmp_path, "auto"), max_connection_age_s=3600)
    assert transport.choose(aged, installed=True).transport == "grpcio"
    with pytest.raises(StartupError, match=r"--transport native cannot serve this configuration: connection idle"):
        transport.choose(config(tmp_path, "native", idle_s=300), installed=True)


def test_native_asked_for_but_not_installed_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="--transport native needs the pygrpc-native package"):
        transport.choose(config(tmp_path, "native"), installed=False)


def test_the_flag_and_the_variable_choose_and_are_validated(tmp_path: Path) -> None:
    repository = ["--model-repository", str(tmp_path)]
    # Users get auto; `pytest --transport X` (make test's second run) makes X the constructor's default.
    assert {f.name: f.default for f in dataclasses.fields(ServerConfig)}["transport"] == "auto"
    assert parse_config(repository, environ={}).transport == ServerConfig(model_repository=tmp_path).transport
    assert parse_config(repository, environ={"CNNSERVE_TRANSPORT": "grpcio"}).transport == "grpcio"
    assert parse_config([*repository, "--transport", "native"], {"CNNSERVE_TRANSPORT": "grpcio"}).transport == "native"
    with pytest.raises(ConfigError, match="transport must be one of auto, grpcio, native, got 'h2'"):
        parse_config(repository, environ={"CNNSERVE_TRANSPORT": "h2"})
    with pytest.raises(SystemExit):
        parse_config([*repository, "--transport", "h2"], environ={})


def answers(address: str, pixels: np.ndarray) -> dict[str, object]:
    """One request of each kind the server has: unary, bidirectional stream, server stream, a bad one, health."""
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(pixels.shape))
    good = pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[pixels.tobytes()])
    bad = pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[b"short"])
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        unary = stub.ModelInfer(good, timeout=5).raw_output_contents[0]
        replies = stub.ModelStreamInfer(iter([good, bad, good]), timeout=5)
        streamed = [r.error_message or r.infer_response.raw_output_contents[0] for r in replies]
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(bad, timeout=5)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="linear"), timeout=5)
        first = next(iter(watch))
        watch.cancel()
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nonesuch"), timeout=5)
    return {
        "unary": unary,
        "stream": streamed,
        "bad": (refused.value.code(), refused.value.details()),
        "watch": first.status,
        "unknown": (unknown.value.code(), unknown.value.details()),
    }


@native_only
def test_both_transports_give_the_same_answers_and_the_log_says_which_runs(
    linear_repository: Path, make_images: Callable[..., np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    pixels = make_images(2)
    seen = {}
    for name in ("grpcio", "native"):
        caplog.clear()
        with (
            caplog.at_level(logging.INFO, "cnnserve.server.transport"),
            serve_in_thread(config(linear_repository, name)) as server,
        ):
            seen[name] = answers(server.address, pixels)
        assert f"gRPC server: {name}" in caplog.text
    assert seen["native"] == seen["grpcio"]
    assert seen["grpcio"]["bad"][0] == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[index]
    assert seen["grpcio"]["unknown"][0] == grpc.StatusCode.NOT_FOUND  # type: ignore[index]
    stream = seen["grpcio"]["stream"]
    assert stream[0] == stream[2] == seen["grpcio"]["unary"] and isinstance(stream[1], str)  # type: ignore[index]


@pytest.mark.parametrize("name", ["grpcio", pytest.param("native", marks=native_only)])
def test_request_metadata_over_the_limit_is_resource_exhausted_and_the_server_keeps_serving(
    linear_repository: Path, make_images: Callable[..., np.ndarray], name: str
) -> None:
    """grpcio refuses metadata over 16 KiB itself; pygrpc-native would answer HTTP 431 (UNKNOWN to clients), so
    the transport raises its limit and the guard refuses with grpcio's status."""
    pixels = make_images(1)
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(pixels.shape))
    request = pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[pixels.tobytes()])
    with serve_in_thread(config(linear_repository, name)) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for method in (stub.ModelInfer, lambda r, **kw: next(iter(stub.ModelStreamInfer(iter([r]), **kw)))):
            with pytest.raises(grpc.RpcError) as refused:
                method(request, metadata=[("x-padding", "p" * 20_000)], timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # under 8 KiB: grpcio refuses some calls at random between its soft limit (8 KiB) and 16 KiB
        assert stub.ModelInfer(request, metadata=[("x-padding", "p" * 4_000)], timeout=5).raw_output_contents


def test_a_second_listener_stays_on_grpcio(tmp_path: Path) -> None:
    """--workers with explicit model control: each worker also listens on a Unix socket for forwarded loads."""
    auto = config(tmp_path, "auto")
    choice = transport.choose(auto, installed=True, listeners=2)
    assert choice.transport == "grpcio" and "2 listeners" in choice.reason
    with pytest.raises(StartupError, match="--transport native cannot serve this configuration: 2 listeners"):
        transport.choose(config(tmp_path, "native"), installed=True, listeners=2)


def test_tls_stays_on_grpcio_which_serves_it(linear_repository: Path, certificates: Any) -> None:
    tls = ServerConfig(
        model_repository=linear_repository,
        port=0,
        metrics_port=-1,
        tls_cert=certificates.server_pem,
        tls_key=certificates.server_key,
        transport="auto",
        max_connection_idle_s=0,
    )
    assert transport.choose(tls, installed=True) == transport.Choice(
        "grpcio", "auto: the native transport cannot serve TLS (--tls-cert): it has none yet"
    )
    with pytest.raises(StartupError, match=r"--transport native cannot serve this configuration: TLS \(--tls-cert\)"):
        transport.choose(dataclasses.replace(tls, transport="native"), installed=True)
    credentials = grpc.ssl_channel_credentials(certificates.ca_pem.read_bytes())
    with serve_in_thread(tls) as server, grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

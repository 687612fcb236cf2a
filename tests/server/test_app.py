"""The server's lifecycle: serving in a thread and as `cnnserve serve`, startup failures and their exit code."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.cli import EXIT_STARTUP, EXIT_USAGE
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError


def infer_request(pixels: np.ndarray, model: str = "linear") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(pixels.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[pixels.tobytes()])


def test_a_server_in_a_thread_serves_reports_health_and_stops(
    linear_repository: Path, make_images: Callable[..., np.ndarray]
) -> None:
    config = ServerConfig(model_repository=linear_repository, port=0, metrics_port=-1)
    with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
        assert server.metrics_port is None and server.port > 0
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "linear"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        pixels = make_images(3)
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(pixels), timeout=5)
        logits = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(3, 10)
        served = server.state.repository.get("linear")
        np.testing.assert_allclose(logits, served.runtime.session.run(None, {"input": pixels})[0], rtol=1e-5, atol=1e-4)
        server.stop()
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_port_in_use_is_a_startup_error(linear_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc_taken = ServerConfig(model_repository=linear_repository, port=port, metrics_port=-1)
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"), serve_in_thread(grpc_taken):
            pass
        metrics_taken = ServerConfig(model_repository=linear_repository, port=0, metrics_port=port)
        with (
            pytest.raises(StartupError, match=f"cannot serve metrics on 127.0.0.1:{port}"),
            serve_in_thread(metrics_taken),
        ):
            pass


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model-repository", "/nonexistent"], EXIT_STARTUP, "model repository /nonexistent is not a folder"),
        (["--max-batch-size", "0"], EXIT_USAGE, "max_batch_size must be an integer between 1 and 4096, got 0"),
        (["--device", "cuda"], EXIT_STARTUP, "--device cuda needs CUDAExecutionProvider but onnxruntime runs"),
    ],
)
def test_cnnserve_serve_startup_failures_exit_with_one_clear_line(
    serve_process: Callable[..., object], linear_repository: Path, args: list[str], code: int, message: str
) -> None:
    import onnxruntime

    if "cuda" in args and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine's onnxruntime has CUDA")
    process = serve_process("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "-1", *args)
    assert process.wait() == code  # type: ignore[attr-defined]
    last = process.lines[-1]  # type: ignore[attr-defined]
    assert last.startswith("cnnserve serve: ") and message in last
    assert "Traceback" not in process.stderr  # type: ignore[attr-defined]

"""The server's lifecycle: serving in a thread and as `cnnserve serve`, startup failures and their exit code."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cnnserve.process import EXIT_STARTUP, EXIT_USAGE
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import RunningServer, serve_in_thread
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


def test_the_shared_running_server_serves_the_exported_models(running_server: RunningServer) -> None:
    served = running_server.state.repository.served()
    assert served and all(model.provider == "CPUExecutionProvider" for model in served)
    model = served[0]
    pixels = np.random.default_rng(1).integers(0, 256, size=(4, *model.card.input.shape), dtype=np.uint8)
    with grpc.insecure_channel(running_server.address) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(pixels, model.name), timeout=10)
    logits = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(4, model.card.num_classes)
    np.testing.assert_allclose(logits, model.runtime.session.run(None, {"input": pixels})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_make_serve_demo_classifies_the_samples_then_serves_until_ctrl_c(
    repo_root: Path, served_repository: Path
) -> None:
    samples = repo_root / "samples" / "fashion-mnist"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "cnnserve", "demo", "--model-repository", str(served_repository)),
            *("--port", "0", "--metrics-port", "0", "--samples", str(samples)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # the demo prints the table, then how to call it, then waits
        lines.append(line.rstrip())
        if line.startswith("Press Ctrl-C"):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    output = "\n".join(lines)
    assert process.returncode == 0, stderr
    assert "true label" in output and "accuracy" in output
    assert re.search(r"^ankle-boot/0\.png +Ankle boot +[* ]\S", output, re.MULTILINE), output
    assert "grpcurl -plaintext 127.0.0.1:" in output


@pytest.mark.gpu
def test_a_cuda_server_answers_like_the_cpu_one(
    linear_repository: Path, make_images: Callable[..., np.ndarray]
) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a CUDA GPU")
    pixels = make_images(5)
    answers = []
    for device in ("cuda", "cpu"):
        config = ServerConfig(model_repository=linear_repository, port=0, metrics_port=-1, device=device)
        with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
            served = server.state.repository.get("linear")
            assert served.provider == ("CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider")
            reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(pixels), timeout=30)
            answers.append(np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(5, 10))
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-3, atol=1e-3)

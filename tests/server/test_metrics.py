"""Prometheus metrics over real HTTP, with Triton's names, read from the statistics the server keeps anyway."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample `name{labels...}` in an exposition text."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_metrics_count_requests_images_batches_and_failures(
    write_version: Callable[..., Path], make_images: Callable[..., np.ndarray]
) -> None:
    root = write_version("linear").parents[1]
    write_version("broken", sha256="0" * 64)
    config = ServerConfig(model_repository=root, port=0, metrics_port=0, max_batch_size=8)
    with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        pixels = make_images(20)  # split into 8 + 8 + 4
        tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=[20, 1, 28, 28])
        stub.ModelInfer(
            pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[pixels.tobytes()])
        )
        wrong = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=[2, 1, 28, 28])
        try:
            stub.ModelInfer(pb.ModelInferRequest(model_name="linear", inputs=[wrong], raw_input_contents=[b"\0"]))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    linear = {"model": "linear", "version": "1"}
    assert sample(text, "nv_inference_request_success_total", **linear) == 1
    assert sample(text, "nv_inference_request_failure_total", reason="OTHER", **linear) == 1
    assert sample(text, "nv_inference_count_total", **linear) == 20
    assert sample(text, "nv_inference_exec_count_total", **linear) == 3
    assert sample(text, "cnnserve_batch_size_bucket", le="4", **linear) == 1
    assert sample(text, "cnnserve_batch_size_bucket", le="8", **linear) == 3
    assert sample(text, "cnnserve_batch_size_sum", **linear) == 20
    assert sample(text, "nv_inference_compute_infer_duration_us_total", **linear) > 0
    assert sample(text, "nv_inference_queue_duration_us_total", **linear) >= 0
    assert sample(text, "nv_inference_pending_request_count", **linear) == 0
    assert sample(text, "cnnserve_model_ready", provider="CPUExecutionProvider", **linear) == 1
    assert sample(text, "cnnserve_model_ready", model="broken", provider="") == 0


def test_two_servers_in_one_process_have_their_own_metrics(linear_repository: Path) -> None:
    config = ServerConfig(model_repository=linear_repository, port=0, metrics_port=0)
    with serve_in_thread(config) as first, serve_in_thread(config) as second:
        assert first.metrics_port != second.metrics_port
        assert first.state.metrics is not None and second.state.metrics is not None
        assert first.state.metrics.registry is not second.state.metrics.registry

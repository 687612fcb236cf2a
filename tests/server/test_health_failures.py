"""Health follows reality: a model version whose batches fail --unhealthy-after-failures times in a row goes
NOT_SERVING (health, ModelReady, RepositoryIndex with its reason) and comes back once a probe batch succeeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto, helper

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig


def fragile_onnx() -> bytes:
    """uint8 (N, 1, 28, 28) -> logits (N, 10), which onnxruntime fails to run when any pixel is 10 or more.

    The brightest pixel indexes a 10-entry Gather (out of bounds: onnxruntime raises) whose zero is added to the
    logits: a real runtime failure that bright images cause and the probe's blank image does not.
    """
    rng = np.random.default_rng(0)
    weights = helper.make_tensor("W", TensorProto.FLOAT, [784, 10], rng.standard_normal(7840))
    table = helper.make_tensor("T", TensorProto.FLOAT, [10], np.zeros(10))
    nodes = [
        helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("ReduceMax", ["input"], ["brightest"], keepdims=0),
        helper.make_node("Cast", ["brightest"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["T", "index"], ["zero"]),
        helper.make_node("Add", ["scores", "zero"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fragile",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [weights, table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def infer(stub: pb_grpc.GRPCInferenceServiceStub, value: int) -> grpc.StatusCode:
    pixels = np.full((1, 1, 28, 28), value, dtype=np.uint8)
    request = pb.ModelInferRequest(model_name="fragile", raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="input", datatype="UINT8", shape=pixels.shape)
    try:
        stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as error:
        assert "onnxruntime" not in error.details() and "Gather" not in error.details(), "internals leaked"
        assert "server log reference" in error.details()
        return error.code()
    return grpc.StatusCode.OK


def test_a_failing_model_goes_not_serving_and_comes_back(
    write_version: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_version("fragile", onnx_bytes=fragile_onnx())
    config = ServerConfig(model_repository=tmp_path / "models", port=0, metrics_port=-1, unhealthy_after_failures=3)
    with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def status(name: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status

        def ready() -> bool:
            return stub.ModelReady(pb.ModelReadyRequest(name="fragile"), timeout=5).ready

        assert infer(stub, 0) == grpc.StatusCode.OK and ready()
        assert [infer(stub, 200) for _ in range(2)] == [grpc.StatusCode.INTERNAL] * 2
        assert ready() and status("fragile") == health_pb2.HealthCheckResponse.SERVING  # 2 < 3 in a row
        assert infer(stub, 200) == grpc.StatusCode.INTERNAL
        deadline = time.monotonic() + 2
        while status("fragile") != health_pb2.HealthCheckResponse.NOT_SERVING:  # set from the loop, at once
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert status("") == health_pb2.HealthCheckResponse.NOT_SERVING  # its only model: the server too
        assert not ready() and not stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        (entry,) = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5).models
        assert entry.state == "UNAVAILABLE" and "3 batches in a row failed" in entry.reason
        # The background probe (a blank image, every second) succeeds: back to SERVING without any request.
        deadline = time.monotonic() + 5
        while status("fragile") != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the probe did not bring the model back"
            time.sleep(0.05)
        assert ready() and stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    # The onnxruntime text went to the log, once (three identical failures within a minute).
    logged = [r for r in caplog.records if "a batch of model fragile" in r.getMessage()]
    assert len(logged) == 1 and "Gather" in logged[0].getMessage()

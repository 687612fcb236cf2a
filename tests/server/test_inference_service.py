"""The Open Inference Protocol service on a real server: metadata, config, inference, streaming, statistics."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.proto import model_config_pb2 as mc


@pytest.fixture(scope="module")
def stub(running_server: Any) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(running_server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer_request(model: Any, pixels: np.ndarray, **fields: Any) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=pixels.shape)
    return pb.ModelInferRequest(model_name=model.name, inputs=[tensor], raw_input_contents=[pixels.tobytes()], **fields)


def logits_of(response: pb.ModelInferResponse, index: int = 0) -> np.ndarray:
    output = response.outputs[index]
    assert output.datatype == "FP32" and not output.HasField("contents")  # raw only: what tritonclient reads
    return np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(tuple(output.shape))


def test_health_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub, running_server: Any, grayscale_model: Any) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=grayscale_model.name)).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name=grayscale_model.name, version=str(grayscale_model.version))).ready
    server = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "cnnserve"
    assert set(server.extensions) == {"classification", "model_configuration", "statistics", "binary_tensor_data"}
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=grayscale_model.name))
    assert (meta.name, meta.platform, list(meta.versions)) == (grayscale_model.name, "onnxruntime_onnx", ["1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "UINT8", [-1, 1, 28, 28])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("logits", "FP32", [-1, 10])]
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
    expected = [(s.name, str(s.version), s.state) for s in running_server.state.repository.statuses()]
    assert [(m.name, m.version, m.state) for m in index.models] == expected


def test_model_config_describes_the_batcher(
    stub: pb_grpc.GRPCInferenceServiceStub, running_server: Any, grayscale_model: Any
) -> None:
    config = stub.ModelConfig(pb.ModelConfigRequest(name=grayscale_model.name)).config
    server_config = running_server.state.config
    assert (config.name, config.platform, config.backend) == (grayscale_model.name, "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == server_config.max_batch_size
    (model_input,) = config.input
    assert (model_input.name, model_input.data_type, model_input.format) == (
        "input",
        mc.TYPE_UINT8,
        mc.ModelInput.FORMAT_NCHW,
    )
    assert list(model_input.dims) == [1, 28, 28]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("logits", mc.TYPE_FP32, [10])]
    assert config.dynamic_batching.max_queue_delay_microseconds == server_config.max_queue_delay_us
    assert config.dynamic_batching.default_queue_policy.max_queue_size == server_config.max_queue_size
    assert config.instance_group[0].count == server_config.instances
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_infer_answers_raw_logits_equal_to_onnxruntime(
    stub: pb_grpc.GRPCInferenceServiceStub,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    reference_logits: Callable[[Any, np.ndarray], np.ndarray],
) -> None:
    pixels = np.ascontiguousarray(fashion_images[:5, np.newaxis])
    response = stub.ModelInfer(infer_request(grayscale_model, pixels, id="req-7"))
    assert (response.id, response.model_name, response.model_version) == ("req-7", grayscale_model.name, "1")
    np.testing.assert_allclose(logits_of(response), reference_logits(grayscale_model, pixels), rtol=1e-5, atol=1e-5)


def test_typed_contents_give_the_same_answer_as_raw(
    stub: pb_grpc.GRPCInferenceServiceStub, grayscale_model: Any, fashion_images: np.ndarray
) -> None:
    pixels = np.ascontiguousarray(fashion_images[:2, np.newaxis])
    typed = pb.ModelInferRequest(model_name=grayscale_model.name)
    tensor = typed.inputs.add(name="input", datatype="UINT8", shape=pixels.shape)
    tensor.contents.uint_contents.extend(pixels.reshape(-1).tolist())
    raw = stub.ModelInfer(infer_request(grayscale_model, pixels))
    np.testing.assert_array_equal(logits_of(stub.ModelInfer(typed)), logits_of(raw))


def test_classification_output_is_score_index_label_best_first(
    stub: pb_grpc.GRPCInferenceServiceStub,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    reference_logits: Callable[[Any, np.ndarray], np.ndarray],
) -> None:
    pixels = np.ascontiguousarray(fashion_images[:3, np.newaxis])
    request = infer_request(grayscale_model, pixels)
    request.outputs.add(name="logits").parameters["classification"].int64_param = 3
    response = stub.ModelInfer(request)
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == ("BYTES", [3, 3])
    raw, elements = response.raw_output_contents[0], []
    while raw:
        (length,) = struct.unpack_from("<I", raw)
        elements.append(raw[4 : 4 + length].decode())
        raw = raw[4 + length :]
    expected = reference_logits(grayscale_model, pixels)
    for row in range(3):
        best = np.argsort(-expected[row], kind="stable")[:3]
        got = [element.split(":") for element in elements[row * 3 : row * 3 + 3]]
        assert [int(index) for _, index, _ in got] == best.tolist()
        assert [label for _, _, label in got] == [grayscale_model.card.labels[i] for i in best]
        np.testing.assert_allclose([float(score) for score, _, _ in got], expected[row][best], rtol=1e-4, atol=1e-4)


def test_stream_answers_each_request_and_survives_a_bad_one(
    stub: pb_grpc.GRPCInferenceServiceStub, grayscale_model: Any, fashion_images: np.ndarray
) -> None:
    pixels = np.ascontiguousarray(fashion_images[:1, np.newaxis])
    bad = infer_request(grayscale_model, pixels, id="bad")
    bad.inputs[0].datatype = "FP32"
    requests = [infer_request(grayscale_model, pixels, id="a"), bad, infer_request(grayscale_model, pixels, id="c")]
    responses = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert [r.infer_response.id for r in responses] == ["a", "bad", "c"]
    assert responses[0].error_message == responses[2].error_message == ""
    assert responses[1].error_message.startswith("INVALID_ARGUMENT: inputs[0].datatype")
    np.testing.assert_array_equal(logits_of(responses[0].infer_response), logits_of(responses[2].infer_response))


def test_statistics_count_requests_and_batches(
    stub: pb_grpc.GRPCInferenceServiceStub, grayscale_model: Any, fashion_images: np.ndarray
) -> None:
    def stats() -> pb.ModelStatistics:
        (entry,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name=grayscale_model.name)).model_stats
        return entry

    before = stats()
    stub.ModelInfer(infer_request(grayscale_model, np.ascontiguousarray(fashion_images[:4, np.newaxis])))
    after = stats()
    assert (after.name, after.version) == (grayscale_model.name, "1")
    assert after.inference_count - before.inference_count == 4
    assert after.execution_count - before.execution_count == 1
    assert after.inference_stats.success.count - before.inference_stats.success.count == 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert 4 in [b.batch_size for b in after.batch_stats]
    assert after.last_inference > 0


def test_queue_timeout_parameter_expires_a_request_that_cannot_run_in_time(
    stub: pb_grpc.GRPCInferenceServiceStub, grayscale_model: Any, fashion_images: np.ndarray
) -> None:
    request = infer_request(grayscale_model, np.ascontiguousarray(fashion_images[:1, np.newaxis]))
    request.parameters["timeout"].int64_param = 1  # one microsecond: gone before the batcher looks at it
    with pytest.raises(grpc.RpcError) as failure:
        stub.ModelInfer(request)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_rpcs_not_implemented_answer_unimplemented(running_server: Any) -> None:
    with grpc.insecure_channel(running_server.address) as channel:
        register = channel.unary_unary("/inference.GRPCInferenceService/SystemSharedMemoryRegister")
        with pytest.raises(grpc.RpcError) as failure:
            register(b"", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_load_without_explicit_model_control_is_a_failed_precondition(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="linear"))
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "needs --model-control-mode explicit" in (failure.value.details() or "")
    assert "model_repository" not in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions

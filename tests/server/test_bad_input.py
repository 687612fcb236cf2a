"""Bad requests get the right status and a message naming the field and what was expected; the server keeps
serving afterwards (checked after every test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.proto import classifier_pb2 as cpb
from cnnserve.proto import classifier_pb2_grpc as cpb_grpc
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig


@pytest.fixture(scope="module")
def channel(running_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(running_server.address) as channel:
        yield channel


@pytest.fixture(autouse=True)
def still_serving_afterwards(
    request: pytest.FixtureRequest, running_server: Any, grayscale_model: Any, fashion_images: np.ndarray
) -> Iterator[None]:
    yield
    with grpc.insecure_channel(running_server.address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            good_request(grayscale_model, fashion_images), timeout=10
        )
    assert len(response.raw_output_contents[0]) == 2 * 10 * 4, f"server broken after {request.node.name}"


def good_request(model: Any, images: np.ndarray, n: int = 2) -> pb.ModelInferRequest:
    pixels = np.ascontiguousarray(images[:n, np.newaxis])
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=pixels.shape)
    return pb.ModelInferRequest(model_name=model.name, inputs=[tensor], raw_input_contents=[pixels.tobytes()])


def failure_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value


def _unknown_model(r: pb.ModelInferRequest) -> None:
    r.model_name = "no_such_model"


def _unknown_version(r: pb.ModelInferRequest) -> None:
    r.model_version = "7"


def _wrong_name(r: pb.ModelInferRequest) -> None:
    r.inputs[0].name = "pixels"


def _wrong_datatype(r: pb.ModelInferRequest) -> None:
    r.inputs[0].datatype = "FP32"


def _wrong_shape(r: pb.ModelInferRequest) -> None:
    r.inputs[0].ClearField("shape")
    r.inputs[0].shape.extend([2, 28, 28, 1])


def _short_raw(r: pb.ModelInferRequest) -> None:
    r.raw_input_contents[0] = r.raw_input_contents[0][:-1]


def _raw_and_typed(r: pb.ModelInferRequest) -> None:
    r.inputs[0].contents.uint_contents.extend([0] * (2 * 28 * 28))


def _batch_of_zero(r: pb.ModelInferRequest) -> None:
    r.inputs[0].shape[0] = 0
    r.raw_input_contents[0] = b""


def _typed_out_of_range(r: pb.ModelInferRequest) -> None:
    r.ClearField("raw_input_contents")
    r.inputs[0].contents.uint_contents.extend([300] * (2 * 28 * 28))


def _unknown_output(r: pb.ModelInferRequest) -> None:
    r.outputs.add(name="probabilities")


def _bad_class_count(r: pb.ModelInferRequest) -> None:
    r.outputs.add(name="logits").parameters["classification"].int64_param = 0


def _negative_timeout(r: pb.ModelInferRequest) -> None:
    r.parameters["timeout"].int64_param = -5


@pytest.mark.parametrize(
    ("breaks", "code", "fragments"),
    [
        (_unknown_model, "NOT_FOUND", ["unknown model 'no_such_model'", "this server has"]),
        (_unknown_version, "NOT_FOUND", ["has no version 7", "version(s) 1"]),
        (_wrong_name, "INVALID_ARGUMENT", ["inputs[0].name is 'pixels'", "expected the model's input 'input'"]),
        (_wrong_datatype, "INVALID_ARGUMENT", ["inputs[0].datatype", "'FP32'", "expected 'UINT8'"]),
        (_wrong_shape, "INVALID_ARGUMENT", ["inputs[0].shape", "[2, 28, 28, 1]", "expected [N, 1, 28, 28]"]),
        (_short_raw, "INVALID_ARGUMENT", ["raw_input_contents", "1567 bytes", "needs 1568 bytes"]),
        (_raw_and_typed, "INVALID_ARGUMENT", ["set `contents`", "raw_input_contents", "not both"]),
        (_batch_of_zero, "INVALID_ARGUMENT", ["a batch of 0", "N >= 1"]),
        (_typed_out_of_range, "INVALID_ARGUMENT", ["contents.uint_contents", "[300, 300]", "UINT8 expects 0..255"]),
        (_unknown_output, "INVALID_ARGUMENT", ["outputs[0].name is 'probabilities'", "one output, 'logits'"]),
        (_bad_class_count, "INVALID_ARGUMENT", ["`classification` is 0", "expected a class count >= 1"]),
        (_negative_timeout, "INVALID_ARGUMENT", ["`timeout` is -5", "expected microseconds >= 0"]),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_bad_infer_requests(
    channel: grpc.Channel,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    breaks: Callable[[pb.ModelInferRequest], None],
    code: str,
    fragments: list[str],
) -> None:
    request = good_request(grayscale_model, fashion_images)
    breaks(request)
    error = failure_of(lambda: pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10))
    assert error.code() == grpc.StatusCode[code], error.details()
    for fragment in fragments:
        assert fragment in error.details()


def test_model_ready_for_an_unknown_model_is_not_found_like_triton(channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    error = failure_of(lambda: stub.ModelReady(pb.ModelReadyRequest(name="no_such_model"), timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "unknown model 'no_such_model'" in error.details()


@pytest.mark.parametrize(
    ("encoded", "fragments"),
    [
        (b"", ["image bytes are empty", "expected an encoded image"]),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ["cannot decode image"]),  # a PNG signature, then garbage
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", ["not a PNG/JPEG image"]),
    ],
    ids=["empty", "corrupt-png", "pdf"],
)
def test_undecodable_images_get_a_per_image_invalid_argument(
    channel: grpc.Channel, grayscale_model: Any, encoded: bytes, fragments: list[str]
) -> None:
    request = cpb.ClassifyRequest(images=[cpb.Image(id="scan-17", encoded=encoded)], model_name=grayscale_model.name)
    (result,) = cpb_grpc.ClassifierStub(channel).Classify(request, timeout=10).results
    assert result.error.code == "INVALID_ARGUMENT" and not result.predictions
    assert "images[0] (id 'scan-17')" in result.error.message
    for fragment in fragments:
        assert fragment in result.error.message


def test_raw_pixels_of_the_wrong_size_get_a_per_image_error(channel: grpc.Channel, grayscale_model: Any) -> None:
    raw = cpb.RawImage(pixels=bytes(32 * 32), channels=1, height=32, width=32)
    request = cpb.ClassifyRequest(images=[cpb.Image(id="big", raw=raw)], model_name=grayscale_model.name)
    (result,) = cpb_grpc.ClassifierStub(channel).Classify(request, timeout=10).results
    assert result.error.code == "INVALID_ARGUMENT"
    assert "1x32x32" in result.error.message and "expects 1x28x28" in result.error.message


@pytest.mark.parametrize(
    ("fields", "code", "fragments"),
    [
        ({"top_k": 11}, "INVALID_ARGUMENT", ["top_k is 11", "expected 1..10"]),
        ({"images": []}, "INVALID_ARGUMENT", ["images is empty", "expected at least one image"]),
        ({"model_name": "no_such_model"}, "NOT_FOUND", ["unknown model 'no_such_model'"]),
        ({"model_version": 9}, "NOT_FOUND", ["has no version 9"]),
    ],
    ids=["top_k", "no-images", "unknown-model", "unknown-version"],
)
def test_bad_classify_requests(
    channel: grpc.Channel,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    encode_png: Callable[[np.ndarray], bytes],
    fields: dict[str, Any],
    code: str,
    fragments: list[str],
) -> None:
    values: dict[str, Any] = {
        "images": [cpb.Image(id="a", encoded=encode_png(fashion_images[0]))],
        "model_name": grayscale_model.name,
        **fields,
    }
    stub = cpb_grpc.ClassifierStub(channel)
    error = failure_of(lambda: stub.Classify(cpb.ClassifyRequest(**values), timeout=10))
    assert error.code() == grpc.StatusCode[code], error.details()
    for fragment in fragments:
        assert fragment in error.details()


# --- a server of its own: a float32 model (NaN/Inf) and a small message limit -------------------------------------


@pytest.fixture
def float_server(write_version: Callable[..., Path], tmp_path: Path) -> Iterator[Any]:
    """A server on a float32-input linear model ("floaty"), with a 64 KiB message limit."""
    card = ModelCard(
        name="floaty",
        architecture="linear",
        input=InputSpec(dtype="float32"),
        labels=tuple(f"class{i}" for i in range(10)),
        normalization=Normalization(mean=(0.5,), std=(0.5,)),
    )
    write_version("floaty", card=card, input_type=TensorProto.FLOAT)
    config = ServerConfig(model_repository=tmp_path / "models", port=0, metrics_port=-1, max_message_bytes=64 * 1024)
    with serve_in_thread(config) as server:
        yield server


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("form", ["raw", "typed"])
def test_nan_and_inf_are_refused_in_float_inputs(float_server: Any, bad: float, form: str) -> None:
    pixels = np.zeros((2, 1, 28, 28), dtype=np.float32)
    pixels[1, 0, 3, 4] = bad
    request = pb.ModelInferRequest(model_name="floaty")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=pixels.shape)
    if form == "raw":
        request.raw_input_contents.append(pixels.tobytes())
    else:
        tensor.contents.fp32_contents.extend(pixels.reshape(-1).tolist())
    with grpc.insecure_channel(float_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        error = failure_of(lambda: stub.ModelInfer(request, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'input' holds 1 NaN or Inf value(s); expected finite numbers" in error.details()
        pixels[1, 0, 3, 4] = 0.5  # the same request with finite values is served
        request.ClearField("raw_input_contents")
        request.raw_input_contents.append(pixels.tobytes())
        request.inputs[0].ClearField("contents")
        assert len(stub.ModelInfer(request, timeout=10).raw_output_contents[0]) == 2 * 10 * 4


def test_a_message_over_the_size_limit_is_resource_exhausted(float_server: Any) -> None:
    pixels = np.zeros((24, 1, 28, 28), dtype=np.float32)  # 75 KB > the 64 KiB limit
    request = pb.ModelInferRequest(model_name="floaty")
    request.inputs.add(name="input", datatype="FP32", shape=pixels.shape)
    request.raw_input_contents.append(pixels.tobytes())
    with grpc.insecure_channel(float_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        error = failure_of(lambda: stub.ModelInfer(request, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        small = pb.ModelInferRequest(model_name="floaty", raw_input_contents=[pixels[:2].tobytes()])
        small.inputs.add(name="input", datatype="FP32", shape=(2, 1, 28, 28))
        assert len(stub.ModelInfer(small, timeout=10).raw_output_contents[0]) == 2 * 10 * 4

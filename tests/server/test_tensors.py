"""cnnserve.server.tensors without a server: the raw and typed forms, BYTES framing, the classification strings."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.server.errors import InvalidInputError
from cnnserve.server.repository import TensorSpec
from cnnserve.server.tensors import (
    add_output,
    classification,
    decode_inputs,
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
)

SPEC = TensorSpec("input", np.dtype(np.uint8), (-1, 1, 2, 2))


def request_with(pixels: np.ndarray, datatype: str = "UINT8") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="input", datatype=datatype, shape=pixels.shape)
    return request


def test_raw_input_is_viewed_in_place_not_copied() -> None:
    pixels = np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2)
    request = request_with(pixels)
    decoded = decode_inputs(request, SPEC)
    np.testing.assert_array_equal(decoded, pixels)
    assert not decoded.flags.writeable and not decoded.flags.owndata  # a view of the request's bytes


def test_typed_int_contents_are_narrowed_to_the_datatype() -> None:
    spec = TensorSpec("input", np.dtype("<i2"), (-1, 3))
    request = pb.ModelInferRequest()
    request.inputs.add(name="input", datatype="INT16", shape=[1, 3]).contents.int_contents.extend([-3, 0, 32767])
    decoded = decode_inputs(request, spec)
    assert decoded.dtype == np.dtype("<i2") and decoded.tolist() == [[-3, 0, 32767]]
    request.inputs[0].contents.int_contents[2] = 32768
    with pytest.raises(InvalidInputError, match=r"INT16 expects -32768\.\.32767"):
        decode_inputs(request, spec)


def test_fp32_raw_is_little_endian_and_nan_is_refused() -> None:
    spec = TensorSpec("input", np.dtype("<f4"), (-1, 2))
    values = np.array([[1.5, -2.0]], dtype="<f4")
    np.testing.assert_array_equal(decode_inputs(request_with(values, "FP32"), spec), values)
    values[0, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        decode_inputs(request_with(values, "FP32"), spec)


def test_more_than_one_input_or_raw_entry_count_mismatch_is_refused() -> None:
    request = request_with(np.zeros((1, 1, 2, 2), dtype=np.uint8))
    request.raw_input_contents.append(b"extra")
    with pytest.raises(InvalidInputError, match="2 raw_input_contents entries for 1 inputs"):
        decode_inputs(request, SPEC)
    request.inputs.add(name="second", datatype="UINT8", shape=[1])
    with pytest.raises(InvalidInputError, match=r"request has 2 inputs \['input', 'second'\]; expected exactly one"):
        decode_inputs(request, SPEC)


def test_bytes_tensors_round_trip_through_the_length_prefixed_form() -> None:
    array = np.array([b"", b"cat", "h\u00e9".encode()], dtype=object)
    raw = serialize_bytes_tensor(array)
    assert raw[:8] == struct.pack("<I", 0) + struct.pack("<I", 3)
    assert deserialize_bytes_tensor(raw).tolist() == array.tolist()
    with pytest.raises(InvalidInputError, match="runs past its end"):
        deserialize_bytes_tensor(raw[:-1])


def test_outputs_always_go_to_raw_output_contents() -> None:
    response = pb.ModelInferResponse()
    logits = np.array([[0.25, -1.0]], dtype=np.float32)
    add_output(response, "logits", logits)
    add_output(response, "logits", classification(logits, ("cat", "dog"), 1))
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("logits", "FP32", [1, 2]),
        ("logits", "BYTES", [1, 1]),
    ]
    assert not any(o.HasField("contents") for o in response.outputs)
    assert response.raw_output_contents[0] == logits.astype("<f4").tobytes()
    assert deserialize_bytes_tensor(response.raw_output_contents[1]).tolist() == [b"0.250000:0:cat"]


def test_classification_is_best_first_clamped_to_the_class_count_like_triton() -> None:
    scores = np.array([[0.1, 3.0, -2.0], [5.0, 5.0, 1.0]], dtype=np.float32)
    result = classification(scores, ("a", "b", "c"), 10)
    assert result.shape == (2, 3)
    assert result[0].tolist() == [b"3.000000:1:b", b"0.100000:0:a", b"-2.000000:2:c"]
    assert result[1, :2].tolist() == [b"5.000000:0:a", b"5.000000:1:b"]  # ties: the lower index first

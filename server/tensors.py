"""Open Inference Protocol messages <-> numpy, once each way: a ModelInferRequest's input tensor, requested outputs
and timeout in; the ModelInferResponse out. The model's TensorSpec says what the input must be.

Inputs are read from `raw_input_contents` without copying (np.frombuffer on the request's bytes) or from the
typed `contents`; every check a client can fail names the field and what was expected. Outputs are always written
to `raw_output_contents`, because tritonclient's InferResult.as_numpy reads only that. The classification
extension turns logits into a BYTES tensor of "score:index:label" strings.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto.datatypes import DATATYPES, datatype_of
from cnnserve.server.errors import InvalidInputError, shown, shown_dims

if TYPE_CHECKING:
    from cnnserve.server.repository import ServedModel, TensorSpec

#: OIP datatype -> the InferTensorContents field that carries it in typed form (FP16/BF16 have none: raw only).
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_LENGTH_PREFIX = struct.Struct("<I")  # BYTES elements in raw form: little-endian uint32 length, then the bytes


@functools.cache
def checked_datatype(dtype: np.dtype | str) -> str:
    """The OIP datatype name of a numpy dtype (or of a card dtype name such as "uint8"), InvalidInputError when it
    has none (cnnserve.proto.datatypes.datatype_of answers None instead). Cached: every request and response asks
    it."""
    name = datatype_of(dtype)
    if name is None:
        raise InvalidInputError(f"numpy dtype {np.dtype(dtype)} has no Open Inference Protocol datatype")
    return name


def decode_inputs(request: pb.ModelInferRequest, spec: TensorSpec) -> np.ndarray:
    """The one input tensor of a request, checked against `spec`, as a numpy array of `spec.shape`.

    Raw data is viewed in place (read-only, no copy). Raises InvalidInputError naming the field and what was
    expected for: a wrong input count or name, a wrong datatype or shape, a batch of zero, raw data of the wrong
    length or mixed with typed contents, typed values out of the datatype's range, NaN or Inf in float inputs.
    """
    inputs = request.inputs
    if len(inputs) != 1:
        names = ", ".join(shown(tensor.name) for tensor in inputs[:4]) + (", ..." if len(inputs) > 4 else "")
        raise InvalidInputError(
            f"request has {len(inputs)} inputs [{names}]; expected exactly one, named {spec.name!r}"
        )
    tensor = inputs[0]
    if tensor.name != spec.name:
        raise InvalidInputError(f"inputs[0].name is {shown(tensor.name)}; expected the model's input {spec.name!r}")
    datatype = checked_datatype(spec.dtype)
    if tensor.datatype != datatype:
        raise InvalidInputError(
            f"inputs[0].datatype of input {spec.name!r} is {shown(tensor.datatype)}; expected {datatype!r}"
        )
    _check_shape(tuple(tensor.shape), spec)
    raw = _raw_contents(request)
    array = decode_tensor(tensor, raw[0] if raw else None, field="inputs[0]")  # shaped as tensor.shape
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InvalidInputError(f"input {spec.name!r} holds {bad} NaN or Inf value(s); expected finite numbers")
    return array


def decode_tensor(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, field: str) -> np.ndarray:
    """One tensor's data as a flat-then-shaped numpy array, from `raw` when given, else from typed contents.

    `field` names the tensor in error messages ("inputs[0]"). Shape entries must be non-negative.
    """
    datatype = tensor.datatype
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"{field}.datatype {shown(datatype)} is not an OIP datatype; expected one of {list(DATATYPES)}"
        )
    shape = tuple(tensor.shape)
    if min(shape, default=0) < 0:
        raise InvalidInputError(f"{field}.shape {shown_dims(shape)} has a negative dimension; expected sizes >= 0")
    count = math.prod(shape)
    if raw is not None:
        if datatype == "BYTES":
            array = deserialize_bytes_tensor(raw, field)
            if array.size != count:
                raise InvalidInputError(
                    f"raw data of {field} holds {array.size} BYTES element(s); shape {shown_dims(tensor.shape)} "
                    f"needs {count}"
                )
        else:
            expected = count * dtype.itemsize
            if len(raw) != expected:
                raise InvalidInputError(
                    f"raw_input_contents for {field} ({shown(tensor.name)}) has {len(raw)} bytes; shape "
                    f"{shown_dims(tensor.shape)} of {datatype} needs {expected} bytes ({count} x {dtype.itemsize})"
                )
            array = np.frombuffer(raw, dtype=dtype)
        return array.reshape(shape)
    return _typed_contents(tensor, dtype, count, field).reshape(shape)


def _check_shape(shape: tuple[int, ...], spec: TensorSpec) -> None:
    want = spec.shape
    matches = len(shape) == len(want) and all(w < 0 or g == w for g, w in zip(shape, want, strict=True))
    if matches and shape[0] >= 1:
        return
    expected = "[" + ", ".join("N" if dim < 0 else str(dim) for dim in want) + "]"  # only built for the message
    if not matches:
        raise InvalidInputError(f"inputs[0].shape of input {spec.name!r} is {shown_dims(shape)}; expected {expected}")
    raise InvalidInputError(
        f"inputs[0].shape of input {spec.name!r} is {shown_dims(shape)}: a batch of {shape[0]}; expected {expected} "
        f"with N >= 1"
    )


def _raw_contents(request: pb.ModelInferRequest) -> Sequence[bytes]:
    """raw_input_contents, after the all-or-nothing rule and the one-entry-per-input rule."""
    raw = request.raw_input_contents
    if not raw:
        return raw
    typed = [tensor.name for tensor in request.inputs if tensor.HasField("contents")]
    if typed:
        raise InvalidInputError(
            f"inputs {typed} set `contents` while the request has raw_input_contents; expected all inputs in "
            "raw_input_contents or all in `contents`, not both"
        )
    if len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"request has {len(raw)} raw_input_contents entries for {len(request.inputs)} inputs; expected one "
            "entry per input, in the order of `inputs`"
        )
    return raw


def _typed_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, dtype: np.dtype, count: int, field: str
) -> np.ndarray:
    name = CONTENTS_FIELDS.get(tensor.datatype)
    if name is None:
        raise InvalidInputError(
            f"{field} is {tensor.datatype}, which has no typed contents; send it in raw_input_contents"
        )
    values = getattr(tensor.contents, name)
    if len(values) != count:
        raise InvalidInputError(
            f"{field}.contents.{name} has {len(values)} value(s); shape {shown_dims(tensor.shape)} needs {count}"
        )
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array
    wide = np.asarray(values)  # the proto field's own type (uint32, int32, ...) before narrowing
    if dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        low, high = int(wide.min()), int(wide.max())
        if low < info.min or high > info.max:
            raise InvalidInputError(
                f"{field}.contents.{name} has values in [{low}, {high}]; "
                f"{tensor.datatype} expects {info.min}..{info.max}"
            )
    return wide.astype(dtype, copy=False)


def timeout_us(request: pb.ModelInferRequest) -> int | None:
    """The `timeout` request parameter (microseconds in the queue), if given."""
    if "timeout" not in request.parameters:
        return None
    parameter = request.parameters["timeout"]
    if parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
        raise InvalidInputError(
            f"parameter `timeout` is a {parameter.WhichOneof('parameter_choice')}; expected int64 microseconds"
        )
    return int(parameter.int64_param or parameter.uint64_param)


def requested_outputs(request: pb.ModelInferRequest, served: ServedModel) -> list[tuple[str, int | None]]:
    """(output name, classification class count or None for the tensor) for each requested output, in order."""
    name = served.output_spec.name
    if not request.outputs:
        return [(name, None)]
    wanted: list[tuple[str, int | None]] = []
    for index, output in enumerate(request.outputs):
        if output.name != name:
            raise InvalidInputError(
                f"outputs[{index}].name is {shown(output.name)}; model {served.name!r} has one output, {name!r}"
            )
        class_count = None
        if "classification" in output.parameters:
            parameter = output.parameters["classification"]
            if parameter.WhichOneof("parameter_choice") != "int64_param":
                raise InvalidInputError(
                    f"outputs[{index}].parameters[classification] is a {parameter.WhichOneof('parameter_choice')}; "
                    "expected an int64 class count"
                )
            class_count = int(parameter.int64_param)
        wanted.append((output.name, class_count))
    return wanted


# --- outputs -----------------------------------------------------------------------------------------------------


def infer_response(
    request: pb.ModelInferRequest, served: ServedModel, logits: np.ndarray, outputs: list[tuple[str, int | None]]
) -> pb.ModelInferResponse:
    """The answer to `request`: each requested output (requested_outputs) made from the (N, classes) logits."""
    response = pb.ModelInferResponse(model_name=served.name, model_version=str(served.version), id=request.id)
    for name, class_count in outputs:
        if class_count is None:
            add_output(response, name, logits)
        else:
            add_output(response, name, classification(logits, served.card.labels, class_count))
    return response


def add_output(response: pb.ModelInferResponse, name: str, array: np.ndarray) -> None:
    """Append one output tensor to `response`, its data in raw_output_contents (the only form tritonclient reads)."""
    datatype = checked_datatype(array.dtype)
    output = response.outputs.add(name=name, datatype=datatype)
    output.shape.extend(array.shape)
    if datatype == "BYTES":
        response.raw_output_contents.append(serialize_bytes_tensor(array))
    else:
        # Little-endian, row-major, no padding: the wire form of every numeric datatype.
        response.raw_output_contents.append(np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes())


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """A BYTES tensor in raw form: each element row-major as a little-endian uint32 length then its bytes."""
    parts = []
    for element in array.reshape(-1):
        data = element if isinstance(element, bytes) else str(element).encode("utf-8")
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes, field: str = "tensor") -> np.ndarray:
    """The inverse of serialize_bytes_tensor: a flat object array of bytes elements."""
    elements: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + _LENGTH_PREFIX.size > len(raw):
            raise InvalidInputError(f"raw BYTES data of {field} ends inside a 4-byte length prefix at byte {offset}")
        (length,) = _LENGTH_PREFIX.unpack_from(view, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(raw):
            raise InvalidInputError(
                f"raw BYTES data of {field}: an element of {length} bytes at byte {offset} runs past its end "
                f"({len(raw)} bytes)"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def classification(scores: np.ndarray, labels: Sequence[str], class_count: int) -> np.ndarray:
    """The classification extension: (N, classes) scores -> BYTES (N, k) of b"score:index:label", best first.

    k = min(class_count, classes), as Triton clamps it. The score is the model's raw output value (the logit),
    formatted like Triton's std::to_string (six decimals). Ties keep the lower index first.
    """
    if class_count < 1:
        raise InvalidInputError(f"output parameter `classification` is {class_count}; expected a class count >= 1")
    k = min(class_count, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k) class indices, best first
    result = np.empty((scores.shape[0], k), dtype=object)
    for row, indices in enumerate(order):
        for column, index in enumerate(indices):
            result[row, column] = f"{scores[row, index]:f}:{index}:{labels[index]}".encode()
    return result

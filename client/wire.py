"""Protobuf at the edge: requests built from ImageItems and numpy arrays, responses read into result dataclasses.

The only client module that touches cnnserve.v1 and inference.* messages; Client and AsyncClient call these and
hand back dataclasses and arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnserve.client.errors import InvalidArgument
from cnnserve.client.images import ImageItem
from cnnserve.client.results import Classification, Health, ModelVersion, Prediction
from cnnserve.proto import classifier_pb2 as pb
from cnnserve.proto import grpc_service_pb2 as oip
from cnnserve.proto.datatypes import DATATYPES, datatype_of

_LAYOUTS = {"CHW": pb.LAYOUT_CHW, "HWC": pb.LAYOUT_HWC}

# --- Classifier ------------------------------------------------------------------------------------------------


def classify_request(
    items: Sequence[ImageItem], *, top_k: int, model: str | None, version: int | None
) -> pb.ClassifyRequest:
    """The request for the items that are to be sent (those without `error`)."""
    images = []
    for item in items:
        if item.error:
            continue
        if item.encoded is not None:
            images.append(pb.Image(id=item.id, encoded=item.encoded))
            continue
        assert item.pixels is not None  # an ImageItem holds exactly one of encoded, pixels, error
        c, h, w = item.pixels.shape if item.layout == "CHW" else np.roll(item.pixels.shape, 1)
        raw = pb.RawImage(pixels=item.pixels.tobytes(), layout=_LAYOUTS[item.layout], channels=c, height=h, width=w)
        images.append(pb.Image(id=item.id, raw=raw))
    return pb.ClassifyRequest(images=images, top_k=top_k, model_name=model or "", model_version=version or 0)


def classifications(
    items: Sequence[ImageItem], response: pb.ClassifyResponse | None, *, model: str | None, version: int | None
) -> list[Classification]:
    """One Classification per item, in order: the server's results merged with the items never sent."""
    answered = iter(response.results) if response is not None else iter(())
    name = response.model_name if response is not None else model or ""
    number = int(response.model_version) if response is not None else version or 0
    out = []
    sent = 0  # the image's index in the request, which the server's per-image errors name
    for item in items:
        if item.error:
            out.append(Classification(id=item.id, top=(), model=name, version=number, error=item.error))
            continue
        result, sent = next(answered, None), sent + 1
        if result is None:
            raise InvalidArgument(
                f"the server answered {len(response.results) if response else 0} results for "
                f"{sum(not i.error for i in items)} images; expected one per image",
                details="short response",
            )
        top = tuple(Prediction(p.label, int(p.index), float(p.probability)) for p in result.predictions)
        error = ""
        if result.HasField("error"):
            # "images[2] (id 'a.png'): cannot decode ..." names the image within the request; the result is that
            # image's own, so drop it: the error reads the same whatever the batching, and as --local's does.
            where = f"images[{sent - 1}] (id {result.id!r}): "
            message = result.error.message
            error = f"{result.error.code}: {message.removeprefix(where)}"
        # The server echoes the id; keep the caller's own (it may be a path the server shortened or not).
        out.append(Classification(id=item.id, top=top, model=name, version=number, error=error))
    return out


def model_versions(response: pb.ListModelsResponse) -> tuple[list[ModelVersion], str]:
    """Every model version the server knows, and its default model ("" when none)."""
    versions = [
        ModelVersion(
            name=m.name,
            version=int(m.version),
            ready=m.state == "READY",
            reason=m.reason,
            labels=tuple(m.labels),
            input_shape=(m.input.channels, m.input.height, m.input.width) if m.HasField("input") else (),
            input_dtype=m.input.dtype if m.HasField("input") else "",
        )
        for m in response.models
    ]
    return versions, response.default_model


# --- Open Inference Protocol -------------------------------------------------------------------------------------


def infer_request(
    array: np.ndarray, *, model: str, version: int | None, input_name: str, output_name: str | None
) -> oip.ModelInferRequest:
    """A ModelInferRequest carrying `array` (batch axis first) as one raw little-endian tensor."""
    datatype = datatype_of(array.dtype)
    if datatype is None or datatype == "BYTES":
        numeric = ", ".join(name for name in DATATYPES if name != "BYTES")
        raise InvalidArgument(
            f"cannot send a {array.dtype} tensor; expected a numeric type of the protocol ({numeric})"
        )
    data = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()  # little-endian, row-major
    request = oip.ModelInferRequest(
        model_name=model,
        model_version=str(version) if version else "",
        inputs=[oip.ModelInferRequest.InferInputTensor(name=input_name, datatype=datatype, shape=array.shape)],
        raw_input_contents=[data],
    )
    if output_name:
        request.outputs.add(name=output_name)
    return request


def infer_output(response: oip.ModelInferResponse, output_name: str | None) -> np.ndarray:
    """The named output (or the first) of a ModelInferResponse, decoded from raw_output_contents."""
    for i, tensor in enumerate(response.outputs):
        if output_name and tensor.name != output_name:
            continue
        dtype = DATATYPES.get(tensor.datatype)
        if dtype is None or dtype.kind == "O" or i >= len(response.raw_output_contents):
            raise InvalidArgument(
                f"output {tensor.name!r} has datatype {tensor.datatype} "
                f"and {len(response.raw_output_contents)} raw entries; expected a numeric tensor in "
                f"raw_output_contents"
            )
        shape = tuple(int(d) for d in tensor.shape)
        return np.frombuffer(response.raw_output_contents[i], dtype=dtype).reshape(shape)
    names = [t.name for t in response.outputs]
    raise InvalidArgument(f"the response has no output {output_name!r}; it has {names}")


# --- grpc.health.v1 ----------------------------------------------------------------------------------------------


def health(service: str, status_name: str) -> Health:
    known = ("SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
    return Health(service=service, status=status_name if status_name in known else "UNKNOWN")  # type: ignore[arg-type]

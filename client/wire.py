"""Protobuf at the edge: requests built from ImageItems and numpy arrays, responses read into result dataclasses.

The only client module that touches cnnserve.v1, inference.* and grpc.health.v1 messages: each request is built
by one function here and each response read by one, so Client, AsyncClient and the load generator (which
serializes what these build) hand back dataclasses and arrays and never a message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from grpc_health.v1 import health_pb2

from cnnserve.client.errors import InvalidArgument, status_error, stream_ended
from cnnserve.client.images import ImageItem, sends
from cnnserve.client.results import Classification, Health, ModelVersion, Prediction, RepositoryModel, TensorMetadata
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


def stream_requests(
    groups: list[list[ImageItem]], *, top_k: int | None, model: str | None, version: int | None
) -> list[pb.ClassifyRequest]:
    """The requests one batch sends on a ClassifyStream: one per group that has an image to send."""
    requests = [classify_request(g, top_k=top_k or 0, model=model, version=version) for g in groups]
    return [request for request in requests if request.images]


def stream_classifications(
    groups: list[list[ImageItem]],
    responses: list[pb.ClassifyResponse | None],
    target: str,
    *,
    model: str | None,
    version: int | None,
) -> list[Classification]:
    """One stream batch's results: its groups merged with the responses of those that were sent, in order.

    A missing response (the stream ended early) or a request that failed as a whole (the server's `error`)
    raises its ClientError.
    """
    answers = iter(responses)
    results: list[Classification] = []
    for group in groups:
        response = next(answers) if sends(group) else None
        if sends(group) and response is None:
            raise stream_ended(target)
        if response is not None and response.HasField("error"):
            raise status_error(response.error.code, response.error.message, "ClassifyStream", target)
        results += classifications(group, response, model=model, version=version)
    return results


def classify_stream_error(answer: bytes) -> str:
    """The status name a serialized ClassifyStream answer carries ("" for success)."""
    response = pb.ClassifyResponse.FromString(answer)
    return str(response.error.code) if response.HasField("error") else ""


def list_models_request() -> pb.ListModelsRequest:
    return pb.ListModelsRequest()


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


def model_versions_of(answer: bytes) -> tuple[list[ModelVersion], str]:
    """model_versions() of a serialized ListModels answer (the load generator calls with raw bytes)."""
    return model_versions(pb.ListModelsResponse.FromString(answer))


def default_model(response: pb.ListModelsResponse, target: str) -> str:
    """The model a call that names none goes to; InvalidArgument when the server has no default."""
    if not response.default_model:
        names = ", ".join(sorted({m.name for m in response.models if m.state == "READY"})) or "none"
        raise InvalidArgument(
            f"the server at {target} has no default model; name one of its ready models ({names}) with model="
        )
    return str(response.default_model)


# --- Open Inference Protocol -------------------------------------------------------------------------------------


def infer_request(
    array: np.ndarray, *, model: str, version: int | str | None, input_name: str, output_name: str | None
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


def model_metadata_request(model: str, version: str) -> oip.ModelMetadataRequest:
    return oip.ModelMetadataRequest(name=model, version=version)


def metadata_inputs(answer: bytes) -> list[TensorMetadata]:
    """The inputs a serialized ModelMetadata answer declares (shape -1 for a variable dimension)."""
    response = oip.ModelMetadataResponse.FromString(answer)
    return [TensorMetadata(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in response.inputs]


def stream_infer_error(answer: bytes) -> str:
    """The status name a serialized ModelStreamInfer answer carries ("" for success): its error_message reads
    "<STATUS>: <message>"."""
    message = oip.ModelStreamInferResponse.FromString(answer).error_message
    return message.partition(":")[0] if message else ""


def server_ready_request() -> oip.ServerReadyRequest:
    return oip.ServerReadyRequest()


def model_ready_request(model: str, version: int | None) -> oip.ModelReadyRequest:
    return oip.ModelReadyRequest(name=model, version=str(version) if version else "")


def is_ready(response: oip.ServerReadyResponse | oip.ModelReadyResponse) -> bool:
    return bool(response.ready)


def load_request(model: str) -> oip.RepositoryModelLoadRequest:
    return oip.RepositoryModelLoadRequest(model_name=model)


def unload_request(model: str, unload_dependents: bool) -> oip.RepositoryModelUnloadRequest:
    request = oip.RepositoryModelUnloadRequest(model_name=model)
    if unload_dependents:
        request.parameters["unload_dependents"].bool_param = True
    return request


def repository_index_request(ready: bool) -> oip.RepositoryIndexRequest:
    return oip.RepositoryIndexRequest(ready=ready)


def repository_models(response: oip.RepositoryIndexResponse) -> list[RepositoryModel]:
    return [
        RepositoryModel(name=m.name, version=int(m.version or 0), state=m.state, reason=m.reason)
        for m in response.models
    ]


# --- grpc.health.v1 ----------------------------------------------------------------------------------------------


def health_request(service: str) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


def health(service: str, response: health_pb2.HealthCheckResponse) -> Health:
    """The Health of a Check answer; a status this client does not know reads UNKNOWN."""
    name = str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    known = ("SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")
    return Health(service=service, status=name if name in known else "UNKNOWN")  # type: ignore[arg-type]

"""The requests `cnnserve bench` sends: built once from what the server says about the model, then serialized.

The load generator sends the same bytes on every call, so everything protobuf happens here, before the clock
starts: v2 ModelInfer requests with raw tensors (sized from ModelMetadata, as perf_analyzer does) and Classifier
requests with encoded images (sized from ListModels, or read from a folder).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from cnnserve.client import wire
from cnnserve.client.errors import BenchError
from cnnserve.client.images import ImageItem
from cnnserve.client.results import ModelVersion
from cnnserve.errors import ConfigError
from cnnserve.preprocess import IMAGE_SUFFIXES
from cnnserve.proto.datatypes import DATATYPES

CLASSIFY_METHOD = "/cnnserve.v1.Classifier/Classify"
CLASSIFY_STREAM_METHOD = "/cnnserve.v1.Classifier/ClassifyStream"
LIST_MODELS_METHOD = "/cnnserve.v1.Classifier/ListModels"
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
MODEL_METADATA_METHOD = "/inference.GRPCInferenceService/ModelMetadata"

#: The OIP datatypes a benchmark input may have: those random values 0..255 fit in (cnnserve.proto.datatypes).
_BENCH_DATATYPES = ("UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64")


@dataclass(frozen=True, slots=True)
class Workload:
    """One point's request: the method names and the serialized request sent on every call (or stream message)."""

    method: str  # unary
    stream_method: str  # bidirectional stream of the same request and response types
    request: bytes
    images_per_request: int

    def stream_error(self, answer: bytes) -> str:
        """The status name a stream answer carries ("" for success): stream errors travel in the message."""
        if self.stream_method == MODEL_STREAM_INFER_METHOD:
            return wire.stream_infer_error(answer)
        return wire.classify_stream_error(answer)


def unary(channel: grpc.Channel, method: str, request: bytes, timeout_s: float) -> bytes:
    """One blocking call with raw bytes in and out (setup only, never in the measured loop)."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    answer: bytes = call(request, timeout=timeout_s)
    return answer


class WorkloadBuilder:
    """Asks a server about a model over `channel` and builds the requests of each size."""

    def __init__(self, channel: grpc.Channel, timeout_s: float) -> None:
        self._channel = channel
        self._timeout_s = timeout_s

    def _models(self) -> tuple[list[ModelVersion], str]:
        request = wire.list_models_request().SerializeToString()
        answer = unary(self._channel, LIST_MODELS_METHOD, request, self._timeout_s)
        return wire.model_versions_of(answer)

    def default_model(self) -> str:
        """The model a request naming none gets (cnnserve servers only: Classifier.ListModels)."""
        versions, default = self._models()
        if not default:
            ready = sorted({m.name for m in versions if m.ready})
            raise BenchError(f"the server has no default model; pass --model (ready: {', '.join(ready) or 'none'})")
        return default

    def v2(self, model: str, version: str, images: int) -> Workload:
        """ModelInfer with `images` rows of random values 0..255 in raw_input_contents (the model's datatype)."""
        request = wire.model_metadata_request(model, version).SerializeToString()
        answer = unary(self._channel, MODEL_METADATA_METHOD, request, self._timeout_s)
        inputs = wire.metadata_inputs(answer)
        if len(inputs) != 1:
            raise BenchError(f"model {model!r} has {len(inputs)} inputs; the benchmark feeds exactly one")
        tensor = inputs[0]
        if tensor.datatype not in _BENCH_DATATYPES:
            raise BenchError(f"input datatype {tensor.datatype} of {model!r} is not one of {sorted(_BENCH_DATATYPES)}")
        shape = [images, *tensor.shape[1:]]  # shape[0] is the batch dimension (-1)
        if any(d < 1 for d in shape):
            raise BenchError(f"model {model!r} has variable non-batch dimensions {list(tensor.shape)}")
        values = np.random.default_rng(0).integers(0, 256, size=shape).astype(DATATYPES[tensor.datatype])
        infer = wire.infer_request(values, model=model, version=version, input_name=tensor.name, output_name=None)
        return Workload(MODEL_INFER_METHOD, MODEL_STREAM_INFER_METHOD, infer.SerializeToString(), images)

    def classifier(self, model: str, version: str, images: int, *, top_k: int, folder: Path | None) -> Workload:
        """Classify with `images` encoded images: files from `folder`, else PNGs synthesized at the model's size."""
        if folder is not None:
            encoded = read_images(folder, max(images, 16))
        else:
            ready = [m for m in self._models()[0] if m.name == model and m.ready]
            if not ready:
                raise BenchError(f"model {model!r} has no READY version on the server")
            encoded = synthetic_pngs(*ready[-1].input_shape)
        items = [ImageItem(id=str(i), encoded=encoded[i % len(encoded)]) for i in range(images)]
        request = wire.classify_request(items, top_k=top_k, model=model, version=int(version or 0))
        return Workload(CLASSIFY_METHOD, CLASSIFY_STREAM_METHOD, request.SerializeToString(), images)


def read_images(folder: Path, limit: int) -> list[bytes]:
    """The bytes of up to `limit` image files under `folder`, in path order."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--images {folder} holds no image files (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    return [p.read_bytes() for p in files[:limit]]


def synthetic_pngs(channels: int, height: int, width: int, count: int = 16) -> list[bytes]:
    """PNGs of the model's size: a gradient plus noise, so they compress and decode like photos, not blanks."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(height), np.arange(width)) * (255 / max(1, height + width - 2))
    encoded = []
    for _ in range(count):
        pixels = np.clip(ramp + rng.normal(0, 40, size=(height, width)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "L").convert("RGB" if channels == 3 else "L").save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def build_workloads(
    channel: grpc.Channel,
    protocol: str,
    model: str,
    version: str,
    sizes: Sequence[int],
    *,
    timeout_s: float,
    top_k: int = 1,
    folder: Path | None = None,
) -> tuple[str, list[Workload]]:
    """The model benchmarked (`model`, or the server's default) and one Workload per size, each probed once.

    The probe sends each request for real, so a request the server refuses (unknown model, wrong size) stops
    the benchmark with the server's own message instead of filling the table with errors.
    """
    builder = WorkloadBuilder(channel, timeout_s)
    try:
        model = model or builder.default_model()
        if protocol == "v2":
            workloads = [builder.v2(model, version, n) for n in sizes]
        else:
            workloads = [builder.classifier(model, version, n, top_k=top_k, folder=folder) for n in sizes]
        for workload in workloads:
            unary(channel, workload.method, workload.request, timeout_s)
    except grpc.RpcError as exc:
        raise BenchError(f"the server refused the benchmark's setup: {exc.code().name}: {exc.details()}") from exc
    return model, workloads

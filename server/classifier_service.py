"""cnnserve's own API, `cnnserve.v1.Classifier`: images in (encoded files or raw pixels), top-k labels out.

Images are decoded off the event loop in a small thread pool (Pillow releases the GIL while decoding) with THE
shared cnnserve.preprocess.to_pixels and the model card's input spec, then batched on the server like any other
request. An image that cannot be decoded gets its own error in its result; the other images are classified.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
import numpy as np

from cnnserve.card import InputSpec
from cnnserve.errors import ImageError
from cnnserve.postprocess import default_top_k, top_k
from cnnserve.preprocess import DEFAULT_LIMITS, DecodeLimits, normalize, to_pixels
from cnnserve.proto import classifier_pb2 as pb
from cnnserve.proto import classifier_pb2_grpc as pb_grpc
from cnnserve.server.deadlines import deadline_of
from cnnserve.server.errors import InvalidInputError, LimitExceededError, ModelNotFoundError, shown
from cnnserve.server.pipeline import ordered_pipeline
from cnnserve.server.stats import Recorded
from cnnserve.server.statuses import failure_of, rpc_servicer

if TYPE_CHECKING:
    from cnnserve.server.repository import ServedModel
    from cnnserve.server.state import ServerState


#: Decoding threads; a few suffice since each decode of a small image takes well under a millisecond.
DECODE_THREADS = min(4, os.cpu_count() or 1)
#: Images one decoding task takes, so that a large request is decoded by several threads at once.
DECODE_CHUNK = 16
#: Requests of one ClassifyStream that may be in flight at once.
STREAM_WINDOW = 16

# One decoded image: its (C, H, W) pixels, or the message saying why it could not be decoded.
Decoded = np.ndarray | str


def decode_image(image: pb.Image, index: int, spec: InputSpec, limits: DecodeLimits = DEFAULT_LIMITS) -> Decoded:
    """One request image as the model's (C, H, W) uint8 pixels, or an error message naming the image."""
    where = f"images[{index}] (id {shown(image.id)})"
    kind = image.WhichOneof("data")
    try:
        if kind == "encoded":
            return to_pixels(image.encoded, spec, limits)
        if kind == "raw":
            return to_pixels(_raw_pixels(image.raw, spec), spec)
    except ImageError as error:
        return f"{where}: {error}"
    return f"{where}: has no data; expected `encoded` image bytes or `raw` pixels"


def _raw_pixels(raw: pb.RawImage, spec: InputSpec) -> np.ndarray:
    """RawImage -> (C, H, W) uint8 without copying, after checking its size against the model's."""
    size = (raw.channels, raw.height, raw.width)
    if size != spec.shape:
        raise ImageError(
            f"raw.channels/height/width are {size[0]}x{size[1]}x{size[2]}; this model expects "
            f"{spec.channels}x{spec.height}x{spec.width} (no resizing of raw pixels)"
        )
    expected = spec.channels * spec.height * spec.width
    if len(raw.pixels) != expected:
        raise ImageError(
            f"raw.pixels has {len(raw.pixels)} bytes; {size[0]}x{size[1]}x{size[2]} uint8 needs {expected}"
        )
    pixels = np.frombuffer(raw.pixels, dtype=np.uint8)
    if raw.layout == pb.LAYOUT_HWC:
        return pixels.reshape(spec.height, spec.width, spec.channels).transpose(2, 0, 1)
    return pixels.reshape(spec.shape)


def _decode_chunk(images: Sequence[pb.Image], first: int, spec: InputSpec, limits: DecodeLimits) -> list[Decoded]:
    return [decode_image(image, first + offset, spec, limits) for offset, image in enumerate(images)]


def requested_top_k(requested: int, num_classes: int) -> int:
    """The number of classes a request asks for, checked: 0 means the default (cnnserve.postprocess); else
    1..num_classes."""
    if requested == 0:
        return default_top_k(num_classes)
    if not 1 <= requested <= num_classes:
        raise InvalidInputError(
            f"top_k is {requested}; expected 1..{num_classes} (the model's number of classes), or 0 for the default"
        )
    return requested


@rpc_servicer
class ClassifierService(pb_grpc.ClassifierServicer):
    """Serves cnnserve.v1.Classifier from a ServerState."""

    def __init__(self, state: ServerState, decoder: Executor) -> None:
        self._state = state
        self._limits = DecodeLimits(state.config.image_formats, state.config.max_image_pixels)
        self._max_images = state.config.max_images_per_request
        self._decoder = decoder  # the Server's decode_pool(): it creates and closes it

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self._classify(request, context)

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        async def answer(request: pb.ClassifyRequest) -> pb.ClassifyResponse:
            try:
                return await self._classify(request, context)
            except Exception as error:  # one request's failure is its response; the stream goes on
                code, message = failure_of(error, "ClassifyStream")
                return pb.ClassifyResponse(
                    request_id=request.request_id, error=pb.Error(code=code.name, message=message)
                )

        async for response in ordered_pipeline(request_iterator, answer, STREAM_WINDOW, self._state.closing):
            yield response

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        repository = self._state.repository
        response = pb.ListModelsResponse()
        for status in repository.statuses():
            entry = response.models.add(
                name=status.name, version=status.version, state=status.state, reason=status.reason
            )
            if status.state == "READY":
                served = repository.get(status.name, status.version)
                spec = served.card.input
                entry.input.CopyFrom(
                    pb.InputSpec(
                        name=spec.name,
                        layout=spec.layout,
                        channels=spec.channels,
                        height=spec.height,
                        width=spec.width,
                        dtype=spec.dtype,
                    )
                )
                entry.labels.extend(served.card.labels)
                entry.provider = served.provider
                entry.max_batch_size = served.max_batch_size
        # Several models and no --default-model: no default, requests must name one.
        with contextlib.suppress(ModelNotFoundError):
            response.default_model = repository.default_model_name()
        return response

    async def _classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        repository = self._state.repository
        served = repository.get(request.model_name or repository.default_model_name(), request.model_version or None)
        with Recorded(served.stats):
            if not request.images:
                raise InvalidInputError("images is empty; expected at least one image")
            if len(request.images) > self._max_images:
                raise LimitExceededError(
                    f"the request has {len(request.images)} images; at most {self._max_images} are accepted per "
                    "request (--max-images-per-request): split it"
                )
            k = requested_top_k(request.top_k, served.card.num_classes)
            decoded = await self._decode(request.images, served.card.input)
            response = pb.ClassifyResponse(
                model_name=served.name, model_version=served.version, request_id=request.request_id
            )
            good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
            pixels = [item for item in decoded if not isinstance(item, str)]
            scores = await self._scores(served, pixels, k, context) if pixels else None
            rows = dict(zip(good, range(len(good)), strict=True))
            labels = served.card.labels
            for i, image in enumerate(request.images):
                result = response.results.add(id=image.id)
                item = decoded[i]
                if isinstance(item, str):
                    result.error.CopyFrom(pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.name, message=item))
                    continue
                assert scores is not None
                indices, probabilities = scores[0][rows[i]], scores[1][rows[i]]
                for index, probability in zip(indices, probabilities, strict=True):
                    result.predictions.add(label=labels[index], index=index, probability=probability)
            return response

    async def _decode(self, images: Sequence[pb.Image], spec: InputSpec) -> list[Decoded]:
        loop = asyncio.get_running_loop()
        chunks = [
            loop.run_in_executor(self._decoder, _decode_chunk, images[i : i + DECODE_CHUNK], i, spec, self._limits)
            for i in range(0, len(images), DECODE_CHUNK)
        ]
        return [item for chunk in await asyncio.gather(*chunks) for item in chunk]

    async def _scores(
        self, served: ServedModel, pixels: list[np.ndarray], k: int, context: grpc.aio.ServicerContext
    ) -> tuple[list[list[int]], list[list[float]]]:
        """(indices, probabilities) of the k best classes, N rows of k, for N decoded images (cnnserve.postprocess;
        as lists, which the loop over images reads faster than numpy scalars)."""
        batch = np.stack(pixels)  # (N, C, H, W) uint8
        if served.card.input.dtype == "float32":
            batch = normalize(batch, served.card.normalization)  # a float32 model does not normalize itself
        logits = await served.infer(batch, deadline=deadline_of(context))
        indices, probabilities = top_k(logits, k)
        return indices.tolist(), probabilities.tolist()


def decode_pool() -> ThreadPoolExecutor:
    """The threads that decode request images; its owner (the Server) shuts it down."""
    return ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="cnnserve-decode")


def add_to_server(server: grpc.aio.Server, state: ServerState, decoder: Executor) -> None:
    """Register cnnserve.v1.Classifier on `server`, decoding images on `decoder` (a decode_pool())."""
    pb_grpc.add_ClassifierServicer_to_server(ClassifierService(state, decoder), server)

"""cnnserve.v1.Classifier on a real server: encoded and raw images, top-k, per-image errors, streams, ListModels,
and 64 concurrent clients each getting their own answer out of shared batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.postprocess import softmax
from cnnserve.proto import classifier_pb2 as pb
from cnnserve.proto import classifier_pb2_grpc as pb_grpc
from cnnserve.proto import grpc_service_pb2 as oip
from cnnserve.proto import grpc_service_pb2_grpc as oip_grpc


@pytest.fixture(scope="module")
def stub(running_server: Any) -> Iterator[pb_grpc.ClassifierStub]:
    with grpc.insecure_channel(running_server.address) as channel:
        yield pb_grpc.ClassifierStub(channel)


def expected_top(model: Any, logits: np.ndarray, k: int) -> list[tuple[str, int, float]]:
    probabilities = softmax(logits[np.newaxis])[0]
    return [(model.card.labels[i], int(i), float(probabilities[i])) for i in np.argsort(-logits, kind="stable")[:k]]


def top_of(result: pb.ImageResult) -> list[tuple[str, int, float]]:
    return [(p.label, p.index, p.probability) for p in result.predictions]


def assert_same_top(got: list[tuple[str, int, float]], want: list[tuple[str, int, float]]) -> None:
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-4, atol=1e-6)


def test_png_and_raw_images_get_the_models_top_k_in_request_order(
    stub: pb_grpc.ClassifierStub,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    encode_png: Callable[[np.ndarray], bytes],
    reference_logits: Callable[[Any, np.ndarray], np.ndarray],
) -> None:
    pixels = fashion_images[:3]
    images = [
        pb.Image(id="png", encoded=encode_png(pixels[0])),
        pb.Image(id="chw", raw=pb.RawImage(pixels=pixels[1].tobytes(), channels=1, height=28, width=28)),
        pb.Image(
            id="hwc",
            raw=pb.RawImage(pixels=pixels[2].tobytes(), layout=pb.LAYOUT_HWC, channels=1, height=28, width=28),
        ),
    ]
    response = stub.Classify(
        pb.ClassifyRequest(images=images, top_k=3, model_name=grayscale_model.name, request_id="r")
    )
    assert (response.model_name, response.model_version, response.request_id) == (grayscale_model.name, 1, "r")
    assert [r.id for r in response.results] == ["png", "chw", "hwc"]
    logits = reference_logits(grayscale_model, np.ascontiguousarray(pixels[:, np.newaxis]))
    for result, row in zip(response.results, logits, strict=True):
        assert not result.HasField("error")
        assert_same_top(top_of(result), expected_top(grayscale_model, row, 3))


def test_an_rgb_jpeg_of_another_size_is_converted_and_resized(
    stub: pb_grpc.ClassifierStub, grayscale_model: Any
) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (90, 60), (200, 30, 30)).save(buffer, format="JPEG")
    request = pb.ClassifyRequest(images=[pb.Image(id="j", encoded=buffer.getvalue())], model_name=grayscale_model.name)
    (result,) = stub.Classify(request).results
    assert len(result.predictions) == 5  # top_k 0 -> the default 5
    assert sum(p.probability for p in result.predictions) <= 1.0 + 1e-6


def test_a_bad_image_gets_its_own_error_and_the_others_are_classified(
    stub: pb_grpc.ClassifierStub,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    encode_png: Callable[[np.ndarray], bytes],
) -> None:
    good = encode_png(fashion_images[0])
    images = [
        pb.Image(id="ok", encoded=good),
        pb.Image(id="broken", encoded=good[:60]),
        pb.Image(id="ok2", encoded=good),
    ]
    response = stub.Classify(pb.ClassifyRequest(images=images, top_k=1, model_name=grayscale_model.name))
    ok, broken, ok2 = response.results
    assert top_of(ok) == top_of(ok2) and len(top_of(ok)) == 1
    assert broken.error.code == "INVALID_ARGUMENT" and not broken.predictions
    assert "images[1] (id 'broken')" in broken.error.message


def test_stream_answers_in_order_and_a_failed_request_does_not_end_it(
    stub: pb_grpc.ClassifierStub,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    encode_png: Callable[[np.ndarray], bytes],
) -> None:
    def request(i: int, top_k: int = 2) -> pb.ClassifyRequest:
        image = pb.Image(id=f"img{i}", encoded=encode_png(fashion_images[i]))
        return pb.ClassifyRequest(images=[image], top_k=top_k, model_name=grayscale_model.name, request_id=f"q{i}")

    requests = [request(i) for i in range(20)]
    requests[7] = request(7, top_k=99)
    responses = list(stub.ClassifyStream(iter(requests), timeout=60))
    assert [r.request_id for r in responses] == [f"q{i}" for i in range(20)]
    assert responses[7].error.code == "INVALID_ARGUMENT" and "top_k is 99" in responses[7].error.message
    assert all(len(r.results) == 1 and r.results[0].id == f"img{i}" for i, r in enumerate(responses) if i != 7)


def test_list_models_describes_every_version(stub: pb_grpc.ClassifierStub, running_server: Any) -> None:
    response = stub.ListModels(pb.ListModelsRequest())
    repository = running_server.state.repository
    assert [(m.name, m.version, m.state) for m in response.models] == [
        (s.name, s.version, s.state) for s in repository.statuses()
    ]
    for entry in response.models:
        served = repository.get(entry.name, entry.version)
        spec = served.card.input
        assert (entry.input.channels, entry.input.height, entry.input.width, entry.input.dtype) == (
            spec.channels,
            spec.height,
            spec.width,
            spec.dtype,
        )
        assert tuple(entry.labels) == served.card.labels
        assert entry.provider == served.provider and entry.max_batch_size == served.max_batch_size


def test_64_concurrent_clients_each_get_their_own_answer_from_shared_batches(
    running_server: Any,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    encode_png: Callable[[np.ndarray], bytes],
    reference_logits: Callable[[Any, np.ndarray], np.ndarray],
) -> None:
    logits = reference_logits(grayscale_model, np.ascontiguousarray(fashion_images[:, np.newaxis]))
    encoded = [encode_png(image) for image in fashion_images]

    async def run() -> tuple[list[pb.ClassifyResponse], oip.ModelStatistics, oip.ModelStatistics]:
        async with grpc.aio.insecure_channel(running_server.address) as channel:
            classifier = pb_grpc.ClassifierStub(channel)
            statistics = oip_grpc.GRPCInferenceServiceStub(channel).ModelStatistics
            stats_request = oip.ModelStatisticsRequest(name=grayscale_model.name)
            before = (await statistics(stats_request)).model_stats[0]
            responses = []
            for _round in range(3):  # each round: 64 clients at once, each with its own image
                calls = [
                    classifier.Classify(
                        pb.ClassifyRequest(
                            images=[pb.Image(id=f"client{i}", encoded=encoded[i])],
                            top_k=3,
                            model_name=grayscale_model.name,
                        ),
                        timeout=60,
                    )
                    for i in range(64)
                ]
                responses = list(await asyncio.gather(*calls))
            after = (await statistics(stats_request)).model_stats[0]
            return responses, before, after

    responses, before, after = asyncio.run(run())
    for i, response in enumerate(responses):
        (result,) = response.results
        assert result.id == f"client{i}"
        assert_same_top(top_of(result), expected_top(grayscale_model, logits[i], 3))
    images = after.inference_count - before.inference_count
    runs = after.execution_count - before.execution_count
    assert images == 3 * 64
    assert runs < images, f"{images} images ran in {runs} session runs: no batching happened"
    counts_before = {b.batch_size: b.compute_infer.count for b in before.batch_stats}
    sizes = [b.batch_size for b in after.batch_stats if b.compute_infer.count > counts_before.get(b.batch_size, 0)]
    assert max(sizes) > 1, f"batch sizes run: {sizes}"


@pytest.fixture(scope="module")
def rgb_server(tiny_repository: Path) -> Iterator[Any]:
    """A server on tiny_repository, whose cnn_rgb takes 3x32x40 (non-square, RGB): the shipped models are gray."""
    from cnnserve.server.app import serve_in_thread
    from cnnserve.server.config import ServerConfig

    config = ServerConfig(model_repository=tiny_repository, port=0, metrics_port=-1, default_model="lenet")
    with serve_in_thread(config) as server:
        yield server


def test_rgb_pixels_in_either_layout_and_as_png_get_the_same_answer(
    rgb_server: Any, encode_png: Callable[[np.ndarray], bytes]
) -> None:
    import onnxruntime

    model = rgb_server.state.repository.get("cnn_rgb")
    c, h, w = model.card.input.shape
    assert (c, h, w) == (3, 32, 40)
    hwc = np.random.default_rng(3).integers(0, 256, size=(h, w, c), dtype=np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    images = [
        pb.Image(id="hwc", raw=pb.RawImage(pixels=hwc.tobytes(), layout=pb.LAYOUT_HWC, channels=c, height=h, width=w)),
        pb.Image(id="chw", raw=pb.RawImage(pixels=chw.tobytes(), layout=pb.LAYOUT_CHW, channels=c, height=h, width=w)),
        pb.Image(id="png", encoded=encode_png(hwc)),
    ]
    with grpc.insecure_channel(rgb_server.address) as channel:
        response = pb_grpc.ClassifierStub(channel).Classify(
            pb.ClassifyRequest(images=images, top_k=c, model_name=model.name)
        )
    session = onnxruntime.InferenceSession(
        str(rgb_server.state.config.model_repository / "cnn_rgb" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    want = expected_top(model, session.run(None, {model.card.input.name: chw[np.newaxis]})[0][0], c)
    assert [r.id for r in response.results] == ["hwc", "chw", "png"]
    for result in response.results:
        assert not result.HasField("error"), result.error.message
        assert_same_top(top_of(result), want)

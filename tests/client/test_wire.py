"""cnnserve.client.wire against a real server: the requests it builds are answered as the model would, and the
responses it reads become the caller's dataclasses and arrays (ids, per-image errors, outputs, health)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from cnnserve.client import wire
from cnnserve.client.channel import Stubs
from cnnserve.client.errors import InvalidArgument
from cnnserve.client.images import ImageItem
from cnnserve.postprocess import top_k
from cnnserve.server.app import RunningServer

from .conftest import FashionModel, FashionTree


@pytest.fixture
def stubs(running_server: RunningServer) -> Iterator[Stubs]:
    with grpc.insecure_channel(running_server.address) as channel:
        yield Stubs.on(channel)


def test_a_classify_request_is_answered_per_image_in_order_with_unsent_items_kept(
    stubs: Stubs, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    paths = fashion_tree.paths[:3]
    items = [
        ImageItem(id=str(paths[0]), encoded=paths[0].read_bytes()),
        ImageItem(id="missing.png", error="INVALID_ARGUMENT: cannot read image file missing.png"),
        ImageItem(id="raw", pixels=fashion_tree.pixels[1]),  # (1, 28, 28) CHW pixels, not a file
        ImageItem(id="corrupt.png", encoded=b"not an image"),
        ImageItem(id=str(paths[2]), encoded=paths[2].read_bytes()),
    ]
    request = wire.classify_request(items, top_k=2, model=fashion_model.name, version=None)
    assert [image.id for image in request.images] == [str(paths[0]), "raw", "corrupt.png", str(paths[2])]
    response = stubs.classifier.Classify(request, timeout=30)
    results = wire.classifications(items, response, model=fashion_model.name, version=None)

    assert [r.id for r in results] == [item.id for item in items]
    expected, _ = top_k(fashion_model.logits(fashion_tree.pixels[[0, 1, 2]]), 2)
    assert [[p.index for p in r.top] for r in (results[0], results[2], results[4])] == expected.tolist()
    assert results[1].error == items[1].error and not results[1].top  # never sent: the client's own error
    # The server's per-image error, without the "images[2] (id ...)" prefix that names it within the request.
    assert results[3].error.startswith("INVALID_ARGUMENT: cannot decode image") and "images[" not in results[3].error
    assert all(r.model == fashion_model.name and r.version == fashion_model.version for r in results)


def test_a_short_response_is_an_error_not_a_silent_gap(stubs: Stubs, fashion_tree: FashionTree) -> None:
    items = [ImageItem(id=str(p), encoded=p.read_bytes()) for p in fashion_tree.paths[:2]]
    response = stubs.classifier.Classify(wire.classify_request(items[:1], top_k=1, model=None, version=None))
    with pytest.raises(InvalidArgument, match="answered 1 results for 2 images"):
        wire.classifications(items, response, model=None, version=None)


def test_a_stream_batch_reads_back_as_the_unary_answer(
    stubs: Stubs, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    groups = [
        [ImageItem(id=str(p), encoded=p.read_bytes()) for p in fashion_tree.paths[:2]],
        [ImageItem(id="gone.png", error="INVALID_ARGUMENT: cannot read image file gone.png")],  # nothing to send
        [ImageItem(id=str(fashion_tree.paths[2]), encoded=fashion_tree.paths[2].read_bytes())],
    ]
    requests = wire.stream_requests(groups, top_k=3, model=fashion_model.name, version=None)
    assert len(requests) == 2  # the group with nothing to send sends no request
    responses = list(stubs.classifier.ClassifyStream(iter(requests), timeout=30))
    results = wire.stream_classifications(groups, responses, "test", model=fashion_model.name, version=None)
    unary = [
        wire.classifications(g, stubs.classifier.Classify(r), model=fashion_model.name, version=None)
        for g, r in zip((groups[0], groups[2]), requests, strict=True)
    ]
    assert [r.id for r in results] == [str(fashion_tree.paths[0]), str(fashion_tree.paths[1]), "gone.png",
                                       str(fashion_tree.paths[2])]  # fmt: skip
    assert [r.top for r in results if r.ok] == [r.top for part in unary for r in part]


def test_a_tensor_goes_out_raw_and_its_output_comes_back_as_the_array(
    stubs: Stubs, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    pixels = fashion_tree.pixels[:5]
    request = wire.infer_request(pixels, model=fashion_model.name, version=None, input_name="input",
                                 output_name="logits")  # fmt: skip
    assert request.inputs[0].datatype == "UINT8" and list(request.inputs[0].shape) == [5, 1, 28, 28]
    logits = wire.infer_output(stubs.inference.ModelInfer(request, timeout=30), "logits")
    np.testing.assert_allclose(logits, fashion_model.logits(pixels), rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidArgument, match="no output 'probabilities'"):
        wire.infer_output(stubs.inference.ModelInfer(request, timeout=30), "probabilities")
    with pytest.raises(InvalidArgument, match="cannot send a complex64 tensor"):
        wire.infer_request(np.zeros((1, 2), np.complex64), model="m", version=None, input_name="x", output_name=None)


def test_models_health_and_readiness_read_into_dataclasses(stubs: Stubs, fashion_model: FashionModel) -> None:
    versions, default = wire.model_versions(stubs.classifier.ListModels(wire.list_models_request()))
    mine = [v for v in versions if v.name == fashion_model.name and v.version == fashion_model.version]
    assert mine and mine[0].ready and mine[0].labels == fashion_model.card.labels
    assert mine[0].input_shape == (1, 28, 28) and mine[0].input_dtype == "uint8"
    assert wire.default_model(stubs.classifier.ListModels(wire.list_models_request()), "test") == default
    assert wire.health("", stubs.health.Check(wire.health_request(""))).serving
    assert wire.is_ready(stubs.inference.ServerReady(wire.server_ready_request()))
    ready = stubs.inference.ModelReady(wire.model_ready_request(fashion_model.name, fashion_model.version))
    assert wire.is_ready(ready)
    index = wire.repository_models(stubs.inference.RepositoryIndex(wire.repository_index_request(ready=True)))
    assert any(m.name == fashion_model.name and m.ready for m in index)

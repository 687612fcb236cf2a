"""Client and AsyncClient against a real server on a real port: every input kind, raw tensors, model listing,
health, the error tree, deadlines, chunking under a small message limit, and retries across a server restart."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.client import AsyncClient, Client, ClientConfig, RetryPolicy, State
from cnnserve.client import errors as E
from cnnserve.client.classify.local import predictions
from cnnserve.client.config import DEFAULT_MAX_MESSAGE_BYTES
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import DEFAULT_MAX_MESSAGE_BYTES as SERVER_MAX_MESSAGE_BYTES
from cnnserve.server.config import ServerConfig

from .conftest import FashionModel, FashionTree


def expected_top(model: FashionModel, pixels: np.ndarray, k: int) -> list[list[tuple[str, int]]]:
    """(label, index) of the top k per image, from onnxruntime directly."""
    tops = predictions(model.logits(pixels), model.card.labels, k)
    return [[(p.label, p.index) for p in top] for top in tops]


def answered(results: list, k: int | None = None) -> list[list[tuple[str, int]]]:
    return [[(p.label, p.index) for p in r.top[:k]] for r in results]


@pytest.fixture
def client(running_server: RunningServer) -> Client:
    with Client(running_server.address) as client:
        yield client


def test_the_default_message_limit_is_the_servers() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == SERVER_MAX_MESSAGE_BYTES


def test_every_input_kind_gives_the_models_answer(
    client: Client, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    pixels = fashion_tree.pixels[:4]  # (4, 1, 28, 28)
    path = fashion_tree.paths[0]
    inputs = [
        str(path),  # a path as str
        fashion_tree.paths[1],  # a pathlib.Path
        fashion_tree.paths[2].read_bytes(),  # encoded bytes
        Image.open(fashion_tree.paths[3]),  # a PIL image
    ]
    results = client.classify(inputs, model=fashion_model.name, top_k=3)
    assert [r.id for r in results] == [str(path), str(fashion_tree.paths[1]), "2", "3"]
    assert answered(results) == expected_top(fashion_model, pixels, 3)
    assert all(r.model == fashion_model.name and r.version == fashion_model.version for r in results)
    expected = predictions(fashion_model.logits(pixels), fashion_model.card.labels, 3)
    for result, top in zip(results, expected, strict=True):
        assert [p.probability for p in result.top] == pytest.approx([p.probability for p in top], abs=1e-6)

    # numpy: (H, W), (H, W, 1), (C, H, W), and a 4-D batch is N images
    image = pixels[0, 0]
    for array in (image, image[:, :, np.newaxis], image[np.newaxis]):
        [one] = client.classify(array, model=fashion_model.name, top_k=2)
        assert answered([one]) == expected_top(fashion_model, pixels[:1], 2)
    batch = client.classify(pixels, model=fashion_model.name)
    assert len(batch) == 4 and [len(r.top) for r in batch] == [5] * 4  # the server's default top_k
    assert answered(batch) == expected_top(fashion_model, pixels, 5)


def test_one_image_still_gives_a_list(client: Client, fashion_model: FashionModel, fashion_tree: FashionTree) -> None:
    results = client.classify(fashion_tree.paths[0], model=fashion_model.name, top_k=1)
    assert isinstance(results, list) and len(results) == 1
    assert results[0].label == fashion_model.card.labels[int(np.argmax(fashion_model.logits(fashion_tree.pixels[:1])))]


def test_infer_returns_the_raw_logits(client: Client, fashion_model: FashionModel, fashion_tree: FashionTree) -> None:
    pixels = fashion_tree.pixels[:16]
    logits = client.infer(pixels, model=fashion_model.name)
    assert logits.dtype == np.float32 and logits.shape == (16, 10)
    np.testing.assert_allclose(logits, fashion_model.logits(pixels), rtol=1e-5, atol=1e-5)


def test_models_health_and_ready(client: Client, fashion_model: FashionModel) -> None:
    models = {m.name: m for m in client.models()}
    listed = models[fashion_model.name]
    assert listed.ready and listed.labels == fashion_model.card.labels
    assert listed.input_shape == (1, 28, 28) and listed.input_dtype == "uint8"
    assert client.health().serving
    assert client.health(fashion_model.name).serving
    assert client.health("no-such-model").status == "SERVICE_UNKNOWN"
    assert client.ready() is True
    assert client.ready(fashion_model.name) is True


def test_the_error_tree(client: Client, fashion_model: FashionModel, fashion_tree: FashionTree) -> None:
    with pytest.raises(E.NotFound) as unknown:
        client.classify(fashion_tree.paths[0], model="no-such-model")
    assert unknown.value.code == "NOT_FOUND" and unknown.value.method == "Classify"
    assert "no-such-model" in str(unknown.value) and client.config.target in str(unknown.value)
    assert unknown.value.__cause__ is not None  # raised from the grpc.RpcError

    with pytest.raises(E.InvalidArgument, match="top_k") as bad_k:
        client.classify(fashion_tree.paths[0], model=fashion_model.name, top_k=11)
    assert bad_k.value.code == "INVALID_ARGUMENT"

    with pytest.raises(E.NotFound):
        client.infer(fashion_tree.pixels[:1], model="no-such-model")
    with pytest.raises(E.InvalidArgument, match=r"shape|28"):
        client.infer(np.zeros((1, 1, 5, 5), np.uint8), model=fashion_model.name)
    for error in (E.NotFound, E.InvalidArgument, E.Unavailable, E.ServerUnreachable, E.DeadlineExceeded):
        assert issubclass(error, E.ClientError)


def test_a_corrupt_image_raises_or_comes_back_with_its_error(
    client: Client, fashion_model: FashionModel, fashion_tree: FashionTree, tmp_path: Path
) -> None:
    good = fashion_tree.paths[0]
    with pytest.raises(E.InvalidArgument, match="1 of 3 images"):
        client.classify([good, b"not an image", good], model=fashion_model.name)
    missing = tmp_path / "missing.png"
    with pytest.raises(E.InvalidArgument, match=r"missing\.png"):
        client.classify([good, missing], model=fashion_model.name)

    results = client.classify([good, b"not an image", missing, good], model=fashion_model.name, on_error="return")
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].error.startswith("INVALID_ARGUMENT") and results[1].top == ()
    assert "missing.png" in results[2].error
    assert results[0].top == results[3].top


def test_classify_stream_answers_each_batch_in_order(
    client: Client, fashion_model: FashionModel, fashion_tree: FashionTree, tmp_path: Path
) -> None:
    paths = list(fashion_tree.paths)
    batches = [paths[i : i + 32] for i in range(0, len(paths), 32)]
    streamed = list(client.classify_stream(iter(batches), model=fashion_model.name, top_k=2))
    assert [len(answer) for answer in streamed] == [len(batch) for batch in batches]
    assert [r for answer in streamed for r in answer] == client.classify(paths, model=fashion_model.name, top_k=2)

    mixed = list(client.classify_stream([[paths[0], b"junk"], [paths[1]]], model=fashion_model.name, on_error="return"))
    assert [r.ok for r in mixed[0]] == [True, False] and mixed[1][0].ok
    with pytest.raises(E.NotFound, match="no-such-model"):
        list(client.classify_stream([[paths[0]]], model="no-such-model"))
    answered_first: list[list[object]] = []
    with pytest.raises(E.InvalidArgument, match=r"missing\.png"):  # raised where it happens, after batch 1
        for answer in client.classify_stream([[paths[0]], [tmp_path / "missing.png"]], model=fashion_model.name):
            answered_first.append(answer)
    assert len(answered_first) == 1


def test_a_long_list_is_sent_in_chunks_that_fit_a_small_message_limit(
    running_server: RunningServer, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    paths = list(fashion_tree.paths)
    assert sum(p.stat().st_size for p in paths) > 2 * 65536  # more than two requests' worth
    config = ClientConfig(running_server.address, max_message_bytes=65536)
    with Client(config) as small:
        results = small.classify(paths, model=fashion_model.name, top_k=1)
        [streamed] = small.classify_stream([paths], model=fashion_model.name, top_k=1)  # one batch, many requests
        assert streamed == results
        logits = small.infer(np.repeat(fashion_tree.pixels, 2, axis=0), model=fashion_model.name)  # 470 KB
        with pytest.raises(E.ResourceExhausted, match="65536"):
            small.classify(np.zeros((300, 300, 3), np.uint8), model=fashion_model.name)
    assert [r.id for r in results] == [str(p) for p in paths]
    assert answered(results) == expected_top(fashion_model, fashion_tree.pixels, 1)
    np.testing.assert_allclose(logits, fashion_model.logits(np.repeat(fashion_tree.pixels, 2, axis=0)), atol=1e-5)


def test_a_deadline_that_passes_raises_deadline_exceeded_without_retrying(
    client: Client, fashion_model: FashionModel
) -> None:
    many = np.zeros((20000, 1, 28, 28), np.uint8)
    start = time.monotonic()
    with pytest.raises(E.DeadlineExceeded) as exc:
        client.infer(many, model=fashion_model.name, timeout=0.002)
    assert exc.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - start < 1.0  # raised at once: never retried


def test_a_closed_client_refuses_calls(running_server: RunningServer, fashion_tree: FashionTree) -> None:
    client = Client(running_server.address)
    assert client.state is State.UNOPENED
    with client:
        assert client.state is State.OPEN
    assert client.state is State.CLOSED
    with pytest.raises(E.ClientClosedError, match="closed"):
        client.classify(fashion_tree.paths[0])
    with pytest.raises(E.ClientClosedError):
        client.open()


def test_server_down_at_start_is_server_unreachable(free_port: int) -> None:
    start = time.monotonic()
    with (
        pytest.raises(E.ServerUnreachable, match=f"127.0.0.1:{free_port}"),
        Client(f"127.0.0.1:{free_port}", connect_timeout_s=0.5),
    ):
        pass
    assert time.monotonic() - start < 3


def test_retries_carry_a_call_across_a_server_restart(
    served_repository: Path, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    config = ServerConfig(model_repository=served_repository, port=0, metrics_port=-1, grace_period_s=1.0)
    with serve_in_thread(config) as first:
        port = first.port
        retrying = Client(
            f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.25)
        ).open()
        once = Client(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1)).open()
        before = retrying.classify(fashion_tree.paths[0], model=fashion_model.name)
    # The server is down now: without retries the call fails at once with UNAVAILABLE.
    with pytest.raises(E.Unavailable):
        once.classify(fashion_tree.paths[0], model=fashion_model.name)

    restarted = threading.Event()
    stop = threading.Event()

    def restart() -> None:
        time.sleep(0.7)
        with serve_in_thread(ServerConfig(model_repository=served_repository, port=port, metrics_port=-1)):
            restarted.set()
            stop.wait(30)

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        # The restarted server loads and warms its models first (seconds on a busy machine); the call's own
        # deadline, not the attempt count, bounds the wait.
        after = retrying.classify(fashion_tree.paths[0], model=fashion_model.name, timeout=60)
        assert restarted.is_set()
        assert after == before
    finally:
        stop.set()
        thread.join()
        retrying.close()
        once.close()


def test_async_client(running_server: RunningServer, fashion_model: FashionModel, fashion_tree: FashionTree) -> None:
    async def scenario() -> None:
        client = AsyncClient(running_server.address, max_message_bytes=65536)
        async with client:
            assert client.state is State.OPEN
            results = await client.classify(list(fashion_tree.paths), model=fashion_model.name, top_k=2)
            assert [r.id for r in results] == [str(p) for p in fashion_tree.paths]
            assert answered(results) == expected_top(fashion_model, fashion_tree.pixels, 2)
            mixed = await client.classify(
                [fashion_tree.pixels[0, 0], Image.open(fashion_tree.paths[0])], model=fashion_model.name
            )
            assert mixed[0].top == mixed[1].top
            batches = [list(fashion_tree.paths[i : i + 50]) for i in range(0, 300, 50)]
            streamed = [answer async for answer in client.classify_stream(batches, model=fashion_model.name, top_k=2)]
            assert [r for answer in streamed for r in answer] == results
            with pytest.raises(E.NotFound):
                async for _ in client.classify_stream([[fashion_tree.paths[0]]], model="no-such-model"):
                    pass
            logits = await client.infer(fashion_tree.pixels[:8], model=fashion_model.name)
            np.testing.assert_allclose(logits, fashion_model.logits(fashion_tree.pixels[:8]), atol=1e-5)
            assert (await client.health()).serving and await client.ready(fashion_model.name)
            assert fashion_model.name in {m.name for m in await client.models()}
            with pytest.raises(E.NotFound):
                await client.classify(fashion_tree.paths[0], model="no-such-model")
            with pytest.raises(E.InvalidArgument, match="top_k"):
                await client.classify(fashion_tree.paths[0], model=fashion_model.name, top_k=11)
            with pytest.raises(E.DeadlineExceeded):
                await client.infer(np.zeros((20000, 1, 28, 28), np.uint8), model=fashion_model.name, timeout=0.002)
        assert client.state is State.CLOSED
        with pytest.raises(E.ClientClosedError):
            await client.models()

    asyncio.run(scenario())

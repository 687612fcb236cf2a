"""Limits on what one request or client may cost, on real servers on real ports: each refusal answers at once with
the status and a message naming its flag, and the server keeps serving."""

from __future__ import annotations

import io
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from cnnserve.process import EXIT_STARTUP
from cnnserve.proto import classifier_pb2 as cpb
from cnnserve.proto import classifier_pb2_grpc as cpb_grpc
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig

from .conftest import random_images


def infer_request(pixels: np.ndarray, model: str = "linear") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(pixels.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[pixels.tobytes()])


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def start(linear_repository: Path) -> Iterator[Callable[..., RunningServer]]:
    """start(**config) -> a running server on `linear` (max_batch_size 8 unless given), stopped at the end."""
    stack: list[Any] = []

    def run(**overrides: Any) -> RunningServer:
        settings = {"max_batch_size": 8, "metrics_port": -1, "port": 0, **overrides}
        context = serve_in_thread(ServerConfig(model_repository=linear_repository, **settings))
        stack.append(context)
        return context.__enter__()

    yield run
    for context in reversed(stack):
        context.__exit__(None, None, None)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    return failure.value


def test_request_caps_answer_resource_exhausted_naming_the_limit(start: Callable[..., RunningServer]) -> None:
    server = start()  # max_batch_size 8: at most 32 images per Classify and a batch of 32 per ModelInfer
    with grpc.insecure_channel(server.address) as channel:
        classifier = cpb_grpc.ClassifierStub(channel)
        empty = cpb.ClassifyRequest(images=[cpb.Image() for _ in range(100_000)])
        began = time.perf_counter()
        error = rpc_error(lambda: classifier.Classify(empty, timeout=10))
        assert time.perf_counter() - began < 2.0  # refused before any decoding
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "100000 images; at most 32 are accepted per request (--max-images-per-request)" in error.details()
        inference = pb_grpc.GRPCInferenceServiceStub(channel)
        error = rpc_error(lambda: inference.ModelInfer(infer_request(random_images(33)), timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "batch of 33; at most 32 per request are accepted (--max-infer-batch-size)" in error.details()
        # The automatic message limit: 2 x 8 images of 784 bytes is far below the 4 MiB floor.
        huge = cpb.ClassifyRequest(images=[cpb.Image(encoded=b"\x00" * (5 * 1024 * 1024))])
        error = rpc_error(lambda: classifier.Classify(huge, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(inference.ModelInfer(infer_request(random_images(32)), timeout=10).raw_output_contents[0]) == 1280


def test_undecodable_bytes_are_invalid_argument_on_every_kind_of_method(
    start: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start()
    garbage = b"\xff\xff\xff\xff\x0f garbage"  # an over-long varint: no protobuf message parses it
    unary = [
        "/cnnserve.v1.Classifier/Classify",
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ServerLive",
        "/grpc.health.v1.Health/Check",
    ]
    streams = [
        "/cnnserve.v1.Classifier/ClassifyStream",
        "/inference.GRPCInferenceService/ModelStreamInfer",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    with caplog.at_level(logging.DEBUG), grpc.insecure_channel(server.address) as channel:
        for method in unary:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            error = rpc_error(lambda call=call: call(garbage, timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error)
            assert f"not a valid protobuf message for {method}" in error.details()
        for method in streams:
            stream = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
            error = rpc_error(lambda stream=stream: list(stream(iter([garbage]), timeout=10)))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error)
        # Inside a stream, after good requests: those are answered first, then the stream ends.
        blank = cpb.RawImage(pixels=bytes(784), channels=1, height=28, width=28)
        good = cpb.ClassifyRequest(images=[cpb.Image(raw=blank)])
        stream = channel.stream_stream(
            "/cnnserve.v1.Classifier/ClassifyStream", request_serializer=None, response_deserializer=None
        )
        answers: list[bytes] = []
        with pytest.raises(grpc.RpcError) as failure:
            for answer in stream(iter([good.SerializeToString()] * 3 + [garbage]), timeout=10):
                answers.append(answer)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(answers) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "grpc" in r.name], "no grpc errors"
    assert not [r for r in caplog.records if r.exc_info], "a client's garbage logs no traceback"


def test_formats_and_decoder_failures_are_per_image_errors(start: Callable[..., RunningServer]) -> None:
    server = start()
    gray = np.full((28, 28), 200, dtype=np.uint8)
    tiff = io.BytesIO()
    Image.fromarray(gray).save(tiff, "TIFF")
    dds = struct.pack("<4sIIIIIII", b"DDS ", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
    dds += struct.pack("<II4s", 32, 4, b"ZZZZ") + b"\0" * 104
    transparent = np.zeros((28, 28, 4), dtype=np.uint8)  # fully transparent: white, once dropped onto white
    images = [
        cpb.Image(id="tiff", encoded=tiff.getvalue()),
        cpb.Image(id="good", encoded=png(gray)),
        cpb.Image(id="dds", encoded=dds),
        cpb.Image(id="alpha", encoded=png(transparent, "RGBA")),
    ]
    with grpc.insecure_channel(server.address) as channel:
        response = cpb_grpc.ClassifierStub(channel).Classify(cpb.ClassifyRequest(images=images), timeout=10)
    tiff_result, good, dds_result, alpha = response.results
    assert tiff_result.error.code == "INVALID_ARGUMENT" and "not a PNG/JPEG image" in tiff_result.error.message
    assert dds_result.error.code == "INVALID_ARGUMENT" and "not a PNG/JPEG image" in dds_result.error.message
    assert good.predictions and alpha.predictions and not good.error.code

    wide = start(image_formats=("PNG", "JPEG", "TIFF", "DDS"))
    with grpc.insecure_channel(wide.address) as channel:
        response = cpb_grpc.ClassifierStub(channel).Classify(cpb.ClassifyRequest(images=images), timeout=10)
    tiff_result, good, dds_result, _ = response.results
    assert tiff_result.predictions and good.predictions  # widened: TIFF decodes
    assert dds_result.error.code == "INVALID_ARGUMENT" and "Unimplemented pixel format" in dds_result.error.message


def test_the_queue_is_bounded_in_bytes(start: Callable[..., RunningServer]) -> None:
    # A non-eager 300 ms delay keeps the first request queued while the second arrives.
    server = start(max_queue_bytes=8 * 784, max_queue_delay_us=300_000, eager_dispatch=False)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        first = stub.ModelInfer.future(infer_request(random_images(6)), timeout=10)
        time.sleep(0.05)
        error = rpc_error(lambda: stub.ModelInfer(infer_request(random_images(4, seed=1)), timeout=10))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "would pass --max-queue-bytes 6272" in error.details()
        assert len(first.result().raw_output_contents[0]) == 6 * 40  # the accepted one is answered


def idle_stream(channel: grpc.Channel) -> tuple[Any, queue.Queue[Any]]:
    """A ClassifyStream kept open: the call and the queue feeding it (put None to half-close)."""
    feed: queue.Queue[Any] = queue.Queue()
    call = cpb_grpc.ClassifierStub(channel).ClassifyStream(iter(feed.get, None), timeout=30)
    return call, feed


def test_concurrent_calls_over_the_limit_are_refused_but_probes_answer(start: Callable[..., RunningServer]) -> None:
    server = start(max_concurrent_rpcs=2)
    image = cpb.Image(encoded=png(np.zeros((28, 28), np.uint8)))
    with grpc.insecure_channel(server.address) as channel:
        streams = []
        for name in ("a", "b"):  # one answer each: both handlers are running before the third call is made
            call, feed = idle_stream(channel)
            feed.put(cpb.ClassifyRequest(request_id=name, images=[image]))
            assert next(call).request_id == name
            streams.append((call, feed))
        inference = pb_grpc.GRPCInferenceServiceStub(channel)
        error = rpc_error(lambda: inference.ModelInfer(infer_request(random_images(1)), timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 2 concurrent calls (--max-concurrent-rpcs)" in error.details()
        assert inference.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        for call, feed in streams:
            feed.put(None)
            assert list(call) == []
        assert len(inference.ModelInfer(infer_request(random_images(1)), timeout=10).raw_output_contents[0]) == 40


def test_draining_closes_an_open_stream_after_its_answers(linear_repository: Path) -> None:
    config = ServerConfig(model_repository=linear_repository, port=0, metrics_port=-1, grace_period_s=20)
    with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
        call, feed = idle_stream(channel)
        feed.put(cpb.ClassifyRequest(request_id="a", images=[cpb.Image(encoded=png(np.zeros((28, 28), np.uint8)))]))
        assert next(call).request_id == "a"
        began = time.perf_counter()
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        with pytest.raises(grpc.RpcError) as failure:
            next(call)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in failure.value.details()
        stopper.join(10)
        assert time.perf_counter() - began < 1.5, "the drain waited for the idle stream"


def test_zero_ready_models_exit_3_unless_allowed(
    serve_process: Callable[..., Any], write_version: Callable[..., Path]
) -> None:
    root = write_version("broken", onnx_bytes=b"not an onnx model").parents[1]
    refused = serve_process("--model-repository", str(root), "--port", "0", "--metrics-port", "-1")
    assert refused.wait() == EXIT_STARTUP
    assert "no model version" in refused.stderr and "--allow-no-ready-models" in refused.stderr
    allowed = serve_process(
        *("--model-repository", str(root), "--port", "0", "--metrics-port", "-1", "--allow-no-ready-models")
    )
    port = allowed.wait_listening()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert not pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=5).ready


def test_echoed_names_and_shapes_are_cut_so_the_status_stays_the_right_one(start: Callable[..., RunningServer]) -> None:
    server = start()
    long_name = "x" * 100_000
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        error = rpc_error(lambda: stub.ModelInfer(infer_request(random_images(1), model=long_name), timeout=10))
        assert error.code() == grpc.StatusCode.NOT_FOUND and len(error.details()) < 400
        named = infer_request(random_images(1))
        named.inputs[0].name = long_name
        error = rpc_error(lambda: stub.ModelInfer(named, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "(100000 characters)" in error.details()
        shaped = infer_request(random_images(1))
        shaped.inputs[0].shape[:] = [1] * 100_000
        error = rpc_error(lambda: stub.ModelInfer(shaped, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "(100000 dimensions)" in error.details()
        assert len(error.details()) < 400
        for version in (" 1", "\u0661", "1_0"):
            error = rpc_error(lambda v=version: stub.ModelInfer(_versioned(v), timeout=10))
            assert error.code() == grpc.StatusCode.NOT_FOUND and "ASCII digits" in error.details()


def _versioned(version: str) -> pb.ModelInferRequest:
    request = infer_request(random_images(1))
    request.model_version = version
    return request


def test_an_idle_connection_is_closed_after_max_connection_idle(start: Callable[..., RunningServer]) -> None:
    server = start(max_connection_idle_s=0.3)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
        states: list[grpc.ChannelConnectivity] = []
        channel.subscribe(states.append)
        deadline = time.monotonic() + 5
        while grpc.ChannelConnectivity.IDLE not in states:  # the server's GOAWAY sends the channel back to IDLE
            assert time.monotonic() < deadline, f"the idle connection stayed open: {states}"
            time.sleep(0.05)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live  # and a new call reconnects

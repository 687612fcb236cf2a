"""SIGTERM during load on a real `cnnserve serve` process: no accepted request fails, then exit 0."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.process import EXIT_FAILURE, EXIT_OK
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


def request_of(pixels: np.ndarray) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(pixels.shape))
    return pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[pixels.tobytes()])


def test_sigterm_during_load_finishes_every_accepted_request_and_exits_0(
    serve_process: Callable[..., Any], linear_repository: Path, make_images: Callable[..., np.ndarray]
) -> None:
    # A long, non-eager queue delay keeps requests waiting in the queue when the signal lands.
    server = serve_process(
        *("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "-1"),
        *("--max-queue-delay-us", "200000", "--no-eager-dispatch", "--grace-period-s", "10"),
    )
    port = server.wait_listening()
    # Outcomes of the requests sent before the signal, and of those sent after it.
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    completed_after_signal = 0
    signalled_at: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(seed: int) -> None:
        nonlocal completed_after_signal
        request = request_of(make_images(2, seed=seed))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                sent_after_signal = bool(signalled_at)
                try:
                    stub.ModelInfer(request, timeout=10)
                    outcome = "OK"
                except grpc.RpcError as exc:
                    outcome = exc.code().name
                with lock:
                    (after if sent_after_signal else before)[outcome] += 1
                    completed_after_signal += outcome == "OK" and not sent_after_signal and bool(signalled_at)
                if outcome != "OK":
                    time.sleep(0.02)

    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in clients:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while before["OK"] < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # every client's next request is now waiting in the 200 ms queue delay: accepted
        with lock:
            signalled_at.append(time.monotonic())
        server.process.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    finally:
        stop.set()
        for thread in clients:
            thread.join(15)
    assert code == EXIT_OK, server.stderr
    # Every request sent before the signal succeeded, those still queued when it came included.
    assert set(before) == {"OK"}, before
    assert completed_after_signal >= 1, "no request that was queued at the signal completed"
    # Later ones are refused: UNAVAILABLE while draining or once the port is closed, or CANCELLED by gRPC itself
    # for a request that reaches the server in the instant it stops (never accepted: see Server.drain_and_stop).
    assert set(after) <= {"OK", "UNAVAILABLE", "CANCELLED"}, after
    assert "SIGTERM received: draining" in server.stderr


def test_a_second_signal_exits_at_once(
    serve_process: Callable[..., Any], linear_repository: Path, make_images: Callable[..., np.ndarray]
) -> None:
    server = serve_process(
        *("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "0"),
        *("--max-queue-delay-us", "8000000", "--no-eager-dispatch", "--grace-period-s", "60"),
    )
    port = server.wait_listening()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    waiting = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(request_of(make_images(1)), timeout=30)
    deadline = time.monotonic() + 10
    while server.pending_requests() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # until the request sits in the 8 s queue delay, so draining waits for it
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    assert server.wait(timeout=10) == EXIT_FAILURE
    assert time.monotonic() - started < 3
    assert "second signal: exiting now" in server.stderr
    waiting.cancel()
    channel.close()

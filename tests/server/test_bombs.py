"""Bombs against a real `cnnserve serve` process: each is refused or served with a bounded rise of the server's
resident memory (< 200 MB over the idle server) while a ServerLive on another connection answers in < 100 ms.
Also: SIGTERM with an idle open stream exits within a second of the last answer."""

from __future__ import annotations

import io
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from cnnserve.proto import classifier_pb2 as cpb
from cnnserve.proto import classifier_pb2_grpc as cpb_grpc
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc

MB = 1024 * 1024
RSS_BUDGET = 200 * MB
LIVE_BUDGET_S = 0.100
# grpc parses a request on the event loop before any handler sees it, and protobuf holds the GIL while it does
# (parsing on a thread instead was measured to stall the loop as long): 700,000 empty images are 700,000
# sub-messages, 27-210 ms to parse on this shared 2-core machine. The message limit bounds it (4 MiB: at most
# 2 million); what is left is this one budget, over the probe's noise like the others.
PARSE_BUDGET_S = 0.250
# Decoding a 16 MP image (the largest the default cap lets through) is 0.4-1.5 s of CPU on a decode thread, with
# the GIL released; on a 2-core machine shared with other work the loop then waits for a core, not the GIL
# (measured: 6-194 ms across runs at load averages 7-12). Half a second still fails if the decode held the GIL.
DECODE_BUDGET_S = 0.500


def rss(pid: int) -> int:
    """Resident set size of a process, bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


# Probes ServerLive on its own connection, in its own process (so the test's building of a bomb cannot stall it
# through the GIL), until its stdin closes; then prints each latency in seconds.
PROBE = """
import sys, threading, time
import grpc
from cnnserve.proto import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pb_grpc
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
with grpc.insecure_channel(sys.argv[1]) as channel:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
    print("ready", flush=True)
    latencies = []
    while not stop.is_set():
        began = time.perf_counter()
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        latencies.append(time.perf_counter() - began)
        time.sleep(0.01)
print(" ".join(f"{x:.6f}" for x in latencies))
"""


@contextmanager
def watched(pid: int, address: str) -> Iterator[dict[str, float]]:
    """While the block runs: the server's peak RSS (sampled every 5 ms) and the ServerLive latencies of a probe
    process. Yields a dict filled in at exit: peak_rss, live_max_s, live_median_s, probes."""
    figures: dict[str, float] = {}
    stop = threading.Event()
    peak = [rss(pid)]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.005)

    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert probe.stdout is not None and probe.stdin is not None
    assert probe.stdout.readline().strip() == "ready"
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield figures
    finally:
        time.sleep(0.05)  # a probe or two after the bomb's answer
        stop.set()
        sampler.join(15)
        out, _ = probe.communicate("", timeout=30)
        latencies = [float(x) for x in out.split()]
        figures.update(
            peak_rss=peak[0],
            live_max_s=max(latencies, default=float("inf")),
            live_median_s=statistics.median(latencies) if latencies else float("inf"),
            probes=len(latencies),
        )


def rgba_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (10, 200, 30, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to claim width x height pixels."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 99).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def typed_request(images: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="linear")
    tensor = request.inputs.add(name="input", datatype="UINT8", shape=[images, 1, 28, 28])
    tensor.contents.uint_contents.extend(np.full(images * 784, 200, dtype=np.uint32).tolist())
    return request


def outcome(call: Callable[[], Any]) -> str:
    """The call's status name, or the status it returns for its one image."""
    try:
        result = call()
    except grpc.RpcError as error:
        return error.code().name
    return result if isinstance(result, str) else "OK"


@pytest.mark.slow
def test_bombs_are_refused_or_served_within_memory_while_liveness_answers(
    serve_process: Callable[..., Any], linear_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve_process("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "-1")
    port = server.wait_listening()
    address, pid = f"127.0.0.1:{port}", server.process.pid
    report: list[str] = []
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 * MB)]) as channel:
        classifier = cpb_grpc.ClassifierStub(channel)
        inference = pb_grpc.GRPCInferenceServiceStub(channel)
        assert classifier.Classify(cpb.ClassifyRequest(images=[cpb.Image(encoded=rgba_png(28, 28))]), timeout=10)
        idle = rss(pid)

        def one_image(data: bytes) -> Callable[[], str]:
            def call() -> str:  # the image's own status: a bad image is an error in its result, not the call's
                request = cpb.ClassifyRequest(images=[cpb.Image(encoded=data)])
                (result,) = classifier.Classify(request, timeout=30).results
                return result.error.code or "OK"

            return call

        def stream_of_many() -> str:
            """500 streams opened at once on one connection: the server takes --max-concurrent-streams (100) of
            them at a time and refuses the rest (RST_STREAM REFUSED_STREAM: UNAVAILABLE, never processed)."""
            feeds = [queue.Queue[Any]() for _ in range(500)]
            calls = [classifier.ClassifyStream(iter(feed.get, None), timeout=60) for feed in feeds]
            time.sleep(1.0)  # let the server see all it will accept
            for feed in feeds:
                feed.put(None)
            outcomes = [outcome(lambda call=call: list(call)) for call in calls]
            assert set(outcomes) <= {"OK", "UNAVAILABLE"} and "OK" in outcomes, outcomes
            return "OK"

        # Built before any is sent: building them is the test's work, not the server's.
        empty_images = cpb.ClassifyRequest(images=[cpb.Image()] * 700_000)
        typed = typed_request(10_000)
        bombs: list[tuple[str, Callable[[], Any], str]] = [
            ("8000x8000 RGBA PNG", one_image(rgba_png(8000, 8000)), "INVALID_ARGUMENT"),
            ("4000x4000 RGBA PNG (16 MP, decoded)", one_image(rgba_png(4000, 4000)), "OK"),
            ("JPEG claiming 60000x60000", one_image(jpeg_claiming(60000, 60000)), "INVALID_ARGUMENT"),
            (
                "700,000 empty images",
                lambda: classifier.Classify(empty_images, timeout=30),
                "RESOURCE_EXHAUSTED",
            ),
            (
                "31 MB typed contents",
                lambda: inference.ModelInfer(typed, timeout=30),
                "RESOURCE_EXHAUSTED",
            ),
            ("500 idle streams on one connection", stream_of_many, "OK"),
        ]
        # The probe's own noise on this machine, with no bomb: the latency budget is over and above it.
        with watched(pid, address) as baseline:
            time.sleep(1.0)
        report.append(
            f"no bomb: ServerLive max {baseline['live_max_s'] * 1e3:.1f} ms (median "
            f"{baseline['live_median_s'] * 1e3:.1f}, {baseline['probes']:.0f} probes); idle RSS {idle / MB:.0f} MB"
        )
        failures: list[str] = []
        for name, bomb, expected in bombs:
            with watched(pid, address) as figures:
                got = outcome(bomb)
            rise = figures["peak_rss"] - idle
            report.append(
                f"{name}: {got}, RSS +{rise / MB:.0f} MB over idle {idle / MB:.0f} MB, ServerLive max "
                f"{figures['live_max_s'] * 1e3:.1f} ms (median {figures['live_median_s'] * 1e3:.1f}, "
                f"{figures['probes']:.0f} probes)"
            )
            failures += [f"{name}: {got}, expected {expected}"] * (got != expected)
            failures += [f"{name}: RSS rose {rise / MB:.0f} MB"] * (rise >= RSS_BUDGET)
            budget = {"700,000": PARSE_BUDGET_S, "4000x4000": DECODE_BUDGET_S}.get(name.split()[0], LIVE_BUDGET_S)
            failures += [f"{name}: ServerLive took {figures['live_max_s'] * 1e3:.0f} ms"] * (
                figures["live_max_s"] >= budget + baseline["live_max_s"]
            )
        assert len(inference.ModelInfer(typed_request(2), timeout=10).raw_output_contents[0]) == 2 * 40
    with capsys.disabled():
        print("\n" + "\n".join(report))
    assert not failures, failures


def test_sigterm_with_an_idle_open_stream_exits_within_a_second_of_the_last_answer(
    serve_process: Callable[..., Any], linear_repository: Path
) -> None:
    server = serve_process(
        *("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "-1"),
        *("--grace-period-s", "20"),
    )
    port = server.wait_listening()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        feed: queue.Queue[Any] = queue.Queue()
        call = cpb_grpc.ClassifierStub(channel).ClassifyStream(iter(feed.get, None), timeout=30)
        feed.put(cpb.ClassifyRequest(request_id="last", images=[cpb.Image(encoded=rgba_png(28, 28))]))
        assert next(call).request_id == "last"
        answered = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as closed:
            next(call)
        assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.wait(10) == 0
        assert time.monotonic() - answered < 1.0, server.stderr

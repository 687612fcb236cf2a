"""What a request waits for on a small machine: wake-ups across CPUs, and batches that run longer in the server
than alone.

Three parts, each printed as a table:
- wake-ups: the round trip between two processes over a pair of pipes, each blocked in read() between messages
  (so its CPU may go idle). Run on two different CPUs, on one CPU, and where the scheduler puts them. The gap
  between the first two is what waking a thread on another, idle CPU costs here. A request crosses five such
  wake-ups in the server (transport I/O thread, the transport's Python thread, event loop, an instance thread,
  event loop) and more in the load generator.
- batches: one server with the default flags under perf_analyzer at --point (32 x 1: many small batches).
  Its ModelStatistics give the input preparation and session run per batch size; beside them, the same
  concatenation and the same run (ModelRuntime, the server's session options) alone in this process. The ratio
  is how much longer a batch takes when it shares the CPUs with the event loop, the transport and the load
  generator.
- one CPU: the whole server confined to one CPU (`taskset -c`) against the default, interleaved, at 32 x 1 and
  8 x 64. On one CPU every hand-off inside the server is a same-CPU wake-up; onnxruntime gets one core.

    .venv/bin/python benchmarks/contention.py --model-repository models --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import grpc
import harness
import numpy as np
import perf_analyzer
import threads
from harness import Measured, markdown_table, serve

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.config import ServerConfig
from cnnserve.server.runtime import ModelRuntime

# The echoing end of a round trip, on the CPU given (or anywhere for -1): one byte back for each byte read, until
# the other end closes its pipe.
_ECHO = """import os, sys
r, w, cpu = map(int, sys.argv[1:])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
while os.read(r, 1):
    os.write(w, b"x")
"""
MIN_SHARE = 0.03  # the batches table leaves out batch sizes that make less than this share of the batches
PINNED_POINTS = ((32, 1), (8, 64))


def round_trip_us(cpus: tuple[int, int] | None, trips: int) -> float:
    """Mean microseconds of one write-then-read round trip to an echoing process; `cpus`: (this end's CPU, the
    echo's CPU), or None to leave both where the scheduler puts them."""
    to_echo_r, to_echo_w = os.pipe()
    from_echo_r, from_echo_w = os.pipe()
    mask = os.sched_getaffinity(0)
    echo = subprocess.Popen(
        [sys.executable, "-c", _ECHO, str(to_echo_r), str(from_echo_w), str(-1 if cpus is None else cpus[1])],
        pass_fds=(to_echo_r, from_echo_w),
    )
    os.close(to_echo_r)
    os.close(from_echo_w)
    try:
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[0]})
        for _ in range(trips // 10):  # warm-up: the echo's interpreter is up and both ends are in their loops
            os.write(to_echo_w, b"x")
            os.read(from_echo_r, 1)
        start = time.perf_counter_ns()
        for _ in range(trips):
            os.write(to_echo_w, b"x")
            os.read(from_echo_r, 1)
        elapsed = time.perf_counter_ns() - start
    finally:
        os.sched_setaffinity(0, mask)
        os.close(to_echo_w)
        echo.wait()
        os.close(from_echo_r)
    return elapsed / trips / 1e3


def wakeups(trips: int, repeats: int) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    first, last = cpus[0], cpus[-1]
    cases: list[tuple[str, tuple[int, int] | None]] = []
    if first != last:
        cases.append((f"on two CPUs ({first} and {last})", (first, last)))
    cases += [(f"on one CPU ({last})", (last, last)), ("where the scheduler puts them", None)]
    timed: dict[str, list[float]] = {label: [] for label, _ in cases}
    for _ in range(repeats):
        for label, pair in cases:
            timed[label].append(round_trip_us(pair, trips))
    rows = [[label, f"{statistics.median(us):.1f}", f"{statistics.median(us) / 2:.1f}"] for label, us in timed.items()]
    return markdown_table(["the two processes", "round trip us", "per wake-up us"], rows)


def batch_times(args: argparse.Namespace, command: list[str]) -> str:
    callers, images = args.point
    config = perf_analyzer.PerfAnalyzerConfig(model=args.model, window_ms=args.pa_window_ms)
    with serve("default", args.model_repository) as server:
        measured = perf_analyzer.measure(command, server, config, callers, images, "unary")
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            (stats,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name=args.model), timeout=10).model_stats
    server_config = ServerConfig(model_repository=args.model_repository)
    runtime = ModelRuntime(
        args.model_repository / stats.name / stats.version / "model.onnx",
        device="cpu",
        allow_cpu_fallback=False,
        intra_op_threads=server_config.intra_op_threads,
        max_batch_size=server_config.max_batch_size,
    )
    image = np.zeros((1, *runtime.session.get_inputs()[0].shape[1:]), dtype=np.uint8)
    runs = sum(b.compute_infer.count for b in stats.batch_stats)
    rows = []
    for batch in sorted(stats.batch_stats, key=lambda b: b.batch_size):
        if batch.compute_infer.count < MIN_SHARE * runs:
            continue
        size = batch.batch_size
        parts = [image] * size
        alone_input = _median_us(lambda parts=parts, size=size: runtime.assemble(parts, size), 200)
        batch_array = runtime.assemble(parts, size)
        runtime.run(batch_array)  # the first run of a shape is slower; the server warmed every size too
        alone_run = _median_us(lambda batch_array=batch_array: runtime.run(batch_array), 50)
        server_input = batch.compute_input.ns / batch.compute_input.count / 1e3
        server_run = batch.compute_infer.ns / batch.compute_infer.count / 1e3
        rows.append(
            [
                size,
                f"{batch.compute_infer.count / runs:.0%}",
                f"{server_input:.1f}",
                f"{alone_input:.1f}",
                f"{server_run:.1f}",
                f"{alone_run:.1f}",
                f"**{server_run / alone_run:.1f}x**",
            ]
        )
    point = measured.point
    head = (
        f"{callers} x {images}, the default server: {point.images_per_s:,.0f} infer/s, p99 "
        f"{point.latency_ms['p99']:.2f} ms; {runs:,} batches of {stats.inference_count / runs:.1f}"
        " images on average\n\n"
    )
    header = [
        "batch size",
        "share of batches",
        "server: input us",
        "alone: input us",
        "server: run us",
        "alone: run us",
        "run, server / alone",
    ]
    return head + markdown_table(header, rows)


def _median_us(call: Callable[[], object], times: int) -> float:
    """The median of `times` timed calls, in microseconds."""
    timed = []
    for _ in range(times):
        start = time.perf_counter_ns()
        call()
        timed.append(time.perf_counter_ns() - start)
    return statistics.median(timed) / 1e3


def one_cpu(args: argparse.Namespace, command: list[str]) -> str:
    cpu = sorted(os.sched_getaffinity(0))[-1]
    config = perf_analyzer.PerfAnalyzerConfig(model=args.model, window_ms=args.pa_window_ms)
    runs: dict[tuple[str, int, int], list[tuple[Measured, float]]] = {}
    with (
        serve("default", args.model_repository) as default,
        serve(f"on CPU {cpu}", args.model_repository, launcher=("taskset", "-c", str(cpu))) as pinned,
    ):
        for _ in range(args.repeats):
            for callers, images in PINNED_POINTS:
                for server in (default, pinned):
                    idle_before, start = threads.machine_idle_s(), time.monotonic()
                    measured = perf_analyzer.measure(command, server, config, callers, images, "unary")
                    idle = (threads.machine_idle_s() - idle_before) / (time.monotonic() - start)
                    runs.setdefault((server.name, callers, images), []).append((measured, idle))
    rows = []
    for callers, images in PINNED_POINTS:
        medians = {}
        for name in ("default", f"on CPU {cpu}"):
            ordered = sorted(runs[(name, callers, images)], key=lambda run: run[0].point.images_per_s)
            medians[name] = ordered[len(ordered) // 2]
        base = medians["default"][0].point.images_per_s
        for name, (measured, idle) in medians.items():
            point = measured.point
            ratio = "" if name == "default" else f"**{point.images_per_s / max(base, 1e-9):.2f}x**"
            rows.append(
                [
                    f"{callers} x {images}",
                    name,
                    f"{point.images_per_s:,.0f}",
                    f"{point.latency_ms['p99']:.2f}",
                    f"{measured.server_cpu_us_per_image:.1f}",
                    f"{idle:.2f}",
                    ratio,
                ]
            )
    header = ["callers x img/req", "server", "infer/s", "p99 ms", "server CPU-us/img", "idle cores", "vs default"]
    return f"median of {args.repeats} by infer/s\n\n" + markdown_table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pa-window-ms", type=int, default=2000, help="perf_analyzer measurement window")
    parser.add_argument("--trips", type=int, default=20_000, help="round trips per wake-up measurement")
    parser.add_argument(
        "--point",
        type=lambda text: tuple(int(n) for n in text.split("x")),
        default=(32, 1),
        help="callers x images per request of the batches part (default 32x1)",
    )


def run(args: argparse.Namespace) -> str:
    sections = [harness.machine(), "#### Wake-ups\n\n" + wakeups(args.trips, args.repeats)]
    command = perf_analyzer.find_command()
    if command is None:
        sections.append("perf_analyzer did not run (benchmarks/install_perf_analyzer.sh failed).")
    else:
        sections.append("#### Batches in the server and alone\n\n" + batch_times(args, command))
        sections.append("#### The whole server on one CPU\n\n" + one_cpu(args, command))
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.script_main(argv, __doc__, run, add_arguments)


if __name__ == "__main__":
    sys.exit(main())

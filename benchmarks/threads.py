"""Where a server's CPU goes under load, thread by thread: grpcio vs the native transport, with perf_analyzer.

Two servers (`--transport grpcio` and `--transport native`, default flags otherwise) run side by side; each point
(8 callers x 64 images and 32 x 1 by default) is measured on both, interleaved, `--repeats` times. During each
perf_analyzer run the server's threads are read from /proc and put in three groups:
- event loop: the main thread, where Python runs the servicers, the batcher and protobuf (de)serialization;
- worker threads: every other thread the transports do not name: the batchers' onnxruntime instance threads,
  and the transport's one Python thread (grpc.aio's completion-queue poller; pygrpc-native's dispatch thread,
  which hands calls from tokio to the event loop); the decode pool is idle on raw tensors;
- transport I/O: the transport's own threads (grpc-core's `event_engine` and friends, pygrpc-native's tokio
  `grpc-native-io`), which do HTTP/2 framing outside the GIL.
Each group is given in CPU-us per image, beside the load generator's CPU and the machine's idle cores, so that
a ratio between the transports can be read against what the model itself costs.

    .venv/bin/python benchmarks/threads.py --model-repository models --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import harness
import perf_analyzer
from harness import Measured, markdown_table, serve

POINTS = ((8, 64), (32, 1))  # callers x images per request
TRANSPORTS = ("grpcio", "native")
GROUPS = ("event loop", "worker threads", "transport I/O")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each group of `pid`'s threads, from /proc/PID/task."""
    groups = dict.fromkeys(GROUPS, 0.0)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread may end between the listing and the read
            stat = (task / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            seconds = harness.stat_cpu_s(stat)
            if int(task.name) == pid:
                groups["event loop"] += seconds
            elif comm.startswith(("grpc", "event_engine", "default-exec", "resolver-exec", "tokio")):
                groups["transport I/O"] += seconds
            else:
                groups["worker threads"] += seconds
    return groups


def machine_idle_s() -> float:
    """Idle seconds of all cores together since boot (/proc/stat's idle + iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Split:
    measured: Measured
    cores: dict[str, float]  # cores per group over the run
    idle_cores: float

    def us_per_image(self, group: str) -> float:
        return self.cores[group] / max(self.measured.point.images_per_s, 1e-9) * 1e6


def measure(
    command: list[str],
    server: harness.ServerProcess,
    config: perf_analyzer.PerfAnalyzerConfig,
    callers: int,
    images: int,
) -> Split:
    """One perf_analyzer point, with the server's threads and the machine's idle read before and after it."""
    pid = server.process.pid
    before, idle_before, start = thread_cpu_s(pid), machine_idle_s(), time.monotonic()
    measured = perf_analyzer.measure(command, server, config, callers, images, "unary")
    after, idle_after, wall = thread_cpu_s(pid), machine_idle_s(), time.monotonic() - start
    cores = {group: (after[group] - before[group]) / wall for group in GROUPS}
    return Split(measured, cores, (idle_after - idle_before) / wall)


def median(splits: Sequence[Split]) -> Split:
    ordered = sorted(splits, key=lambda split: split.measured.point.images_per_s)
    return ordered[len(ordered) // 2]


def markdown(runs: dict[tuple[str, int, int], Split]) -> str:
    header = [
        "callers x img/req",
        "transport",
        "infer/s",
        "p99 ms",
        *(f"{group} CPU-us/img" for group in GROUPS),
        "server CPU-us/img",
        "perf_analyzer cores",
        "idle cores",
        "native / grpcio",
    ]
    rows = []
    for callers, images in dict.fromkeys((c, i) for _, c, i in runs):
        for transport in TRANSPORTS:
            split = runs[(transport, callers, images)]
            point = split.measured.point
            ratio = ""
            if transport == "native":
                grpcio = runs[("grpcio", callers, images)].measured.point.images_per_s
                ratio = f"**{point.images_per_s / max(grpcio, 1e-9):.2f}x**"
            rows.append(
                [
                    f"{callers} x {images}",
                    transport,
                    f"{point.images_per_s:,.0f}",
                    f"{point.latency_ms['p99']:.2f}",
                    *(f"{split.us_per_image(group):.1f}" for group in GROUPS),
                    f"{sum(split.us_per_image(group) for group in GROUPS):.1f}",
                    f"{sum(point.loadgen_cpu):.2f}",
                    f"{split.idle_cores:.2f}",
                    ratio,
                ]
            )
    return markdown_table(header, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pa-window-ms", type=int, default=3000, help="perf_analyzer measurement window")


def run(args: argparse.Namespace) -> str:
    command = perf_analyzer.find_command()
    if command is None:
        return "perf_analyzer did not run (benchmarks/install_perf_analyzer.sh failed)."
    config = perf_analyzer.PerfAnalyzerConfig(model=args.model, window_ms=args.pa_window_ms)
    splits: dict[tuple[str, int, int], list[Split]] = {}
    flags = tuple(args.server_flag)
    with (
        serve("grpcio", args.model_repository, "--transport", "grpcio", *flags) as grpcio,
        serve("native", args.model_repository, "--transport", "native", *flags) as native,
    ):
        for _ in range(args.repeats):
            for callers, images in POINTS:
                for server in (grpcio, native):
                    split = measure(command, server, config, callers, images)
                    splits.setdefault((server.name, callers, images), []).append(split)
    runs = {key: median(values) for key, values in splits.items()}
    return f"{harness.machine()}, median of {args.repeats} by infer/s\n\n" + markdown(runs)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.script_main(argv, __doc__, run, add_arguments)


if __name__ == "__main__":
    sys.exit(main())

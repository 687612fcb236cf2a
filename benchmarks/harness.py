"""What the benchmark scripts share: servers started in subprocesses, their CPU use, the machine, markdown.

Each script starts the servers it compares itself (`cnnserve serve` on a free port, no metrics endpoint), waits
until they answer ServerReady, measures with the load generator of `cnnserve bench` (cnnserve.client.bench.loadgen)
and stops them with SIGTERM, as a user would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np

from cnnserve.client.bench import loadgen
from cnnserve.client.bench.loadgen import BenchConfig, PointResult
from cnnserve.proto import grpc_service_pb2 as pb

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later; a clash fails loudly at startup)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stat_cpu_s(stat: str) -> float:
    """User + system CPU seconds from the text of a /proc/PID/stat or /proc/PID/task/TID/stat file."""
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14, 15)


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and every live descendant (server workers included), from /proc."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            total += stat_cpu_s(Path(f"/proc/{current}/stat").read_text())
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return total


@dataclass
class ServerProcess:
    """A `cnnserve serve` subprocess on 127.0.0.1:`port`."""

    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        return process_tree_cpu_s(self.process.pid)


def _wait_ready(server: ServerProcess, timeout_s: float, credentials: grpc.ChannelCredentials | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    request = pb.ServerReadyRequest().SerializeToString()
    opened = grpc.secure_channel(server.address, credentials) if credentials else grpc.insecure_channel(server.address)
    with opened as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerReady", request_serializer=None, response_deserializer=None
        )
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server {server.name} exited with {server.process.returncode} during startup")
            with contextlib.suppress(grpc.RpcError):
                if pb.ServerReadyResponse.FromString(call(request, timeout=1.0)).ready:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"server {server.name} was not ready within {timeout_s:g} s")


PORT = "{port}"  # stands for the free port in a server command


@contextlib.contextmanager
def serve_command(
    name: str, command: Sequence[str], timeout_s: float = 60.0, credentials: grpc.ChannelCredentials | None = None
) -> Iterator[ServerProcess]:
    """Run `command` (PORT replaced by a free port) until it answers ServerReady (over TLS with `credentials`);
    SIGTERM it on exit."""
    port = free_port()
    argv = [str(port) if arg == PORT else arg for arg in command]
    server = ServerProcess(name, subprocess.Popen(argv, env=os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}), port)
    try:
        _wait_ready(server, timeout_s, credentials)
        yield server
    finally:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def serve(
    name: str,
    repository: Path,
    *flags: str,
    credentials: grpc.ChannelCredentials | None = None,
    launcher: Sequence[str] = (),
) -> contextlib.AbstractContextManager[ServerProcess]:
    """`cnnserve serve --model-repository REPOSITORY --port FREE --metrics-port -1 FLAGS...`, ready, then stopped;
    `launcher`: a command that runs it (`taskset -c 1`, for example)."""
    command = [*launcher, sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", str(repository)]
    return serve_command(name, [*command, "--port", PORT, "--metrics-port", "-1", *flags], credentials=credentials)


@dataclass(frozen=True, slots=True)
class Measured:
    """One load generator point against one server, with the server's CPU during it."""

    server: str
    point: PointResult
    server_cpu: float  # cores the server's processes used while loaded (CPU seconds / wall seconds)

    @property
    def server_cpu_us_per_image(self) -> float:
        return self.server_cpu / max(self.point.images_per_s, 1e-9) * 1e6


class CpuSampler:
    """Samples a server's CPU seconds every `interval_s` in a thread, to read its use over any past window."""

    def __init__(self, server: ServerProcess, interval_s: float = 0.05) -> None:
        self._server = server
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []  # (time.monotonic(), CPU seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self._samples.append((time.monotonic(), self._server.cpu_s()))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> float:
        """CPU seconds per wall second between two monotonic instants (interpolated between samples)."""
        times, cpu = zip(*self._samples, strict=True)
        used = float(np.interp(end, times, cpu) - np.interp(start, times, cpu))
        return used / (end - start)


def measure(server: ServerProcess, config: BenchConfig, concurrency: int, images: int) -> Measured:
    """One point of `config` against `server` (warm-up, then the window), with the server's CPU in the window."""
    config = replace(config, server=server.address, concurrency=(concurrency,), images_per_request=(images,))
    with CpuSampler(server) as sampler:
        (point,) = loadgen.run(config)
        time.sleep(sampler.interval_s * 2)  # a sample after the window's end, to interpolate against
    return Measured(server.name, point, sampler.cores(*point.window))


def machine() -> str:
    """CPU model, cores and the load average now: the context every figure needs."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} logical cores, load average {load} (1/5/15 min), Python {platform.python_version()}"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median_by_throughput(runs: Sequence[Measured]) -> Measured:
    """The run with the median images/s, whole (its latencies belong to it; a per-column median would mix runs)."""
    ordered = sorted(runs, key=lambda m: m.point.images_per_s)
    return ordered[len(ordered) // 2]


def interleave(
    servers: Sequence[ServerProcess],
    configs: Mapping[str, BenchConfig],
    points: Sequence[tuple[int, int]],
    repeats: int,
) -> dict[tuple[str, str, int, int], Measured]:
    """Every (server, load generator config, concurrency, images) point `repeats` times, interleaved so that a
    neighbour's burst on this shared machine hits every configuration alike; the median run of each, keyed by
    (server name, config label, concurrency, images)."""
    runs: dict[tuple[str, str, int, int], list[Measured]] = {}
    for _ in range(repeats):
        for concurrency, images in points:
            for server in servers:
                for label, config in configs.items():
                    measured = measure(server, config, concurrency, images)
                    runs.setdefault((server.name, label, concurrency, images), []).append(measured)
    return {key: median_by_throughput(values) for key, values in runs.items()}


def describe(m: Measured) -> list[str]:
    """img/s, p50, p99, errors, generator cores, server CPU-us per image: the cells every table shows."""
    lat = m.point.latency_ms
    return [
        f"{m.point.images_per_s:,.0f}",
        f"{lat['p50']:.2f}",
        f"{lat['p99']:.2f}",
        str(m.point.error_count),
        "+".join(f"{c:.2f}" for c in m.point.loadgen_cpu),
        f"{m.server_cpu:.2f}",
        f"{m.server_cpu_us_per_image:.0f}",
    ]


DESCRIBE_HEADER = ["img/s", "p50 ms", "p99 ms", "errors", "loadgen cores", "server cores", "server CPU-us/img"]


@dataclass(frozen=True, slots=True)
class Pair:
    """One point measured on two configurations: `a`, the one under study, and `b`, its baseline."""

    concurrency: int
    images_per_request: int
    a: Measured
    b: Measured

    @property
    def ratio(self) -> float:
        """a's images/s over b's."""
        return self.a.point.images_per_s / max(self.b.point.images_per_s, 1e-9)


def pairs(
    runs: dict[tuple[str, str, int, int], Measured],
    a: tuple[str, str],
    b: tuple[str, str],
    points: Sequence[tuple[int, int]],
) -> list[Pair]:
    """Pairs out of `interleave`'s runs: `a` and `b` are (server name, config label)."""
    return [Pair(c, n, runs[(*a, c, n)], runs[(*b, c, n)]) for c, n in points]


def paired_table(label: str, names: tuple[str, str], ratio_label: str, rows: Sequence[Pair]) -> str:
    """Two lines per point (the configuration under study, then its baseline) and the ratio on the first line."""
    header = ["callers x img/req", label, *DESCRIBE_HEADER, ratio_label]
    body = []
    for row in rows:
        point = f"{row.concurrency} x {row.images_per_request}"
        body.append([point, names[0], *describe(row.a), f"**{row.ratio:.2f}x**"])
        body.append([point, names[1], *describe(row.b), ""])
    return markdown_table(header, body)


# --- the command line every served benchmark shares ------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every served benchmark takes."""
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--model", default="fashion_lenet", help="model to load the servers with")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each point")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per point (the median is shown)")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--server-flag", action="append", default=[], help="extra `cnnserve serve` flag (repeat)")
    parser.add_argument(
        "--rpc", choices=("unary", "stream"), default="unary", help="one call per request, or one stream per caller"
    )


def config_from(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        model=args.model, duration_s=args.duration, warmup_s=args.warmup, processes=args.processes, rpc=args.rpc
    )


def script_main(
    argv: Sequence[str] | None,
    description: str | None,
    run: Callable[[argparse.Namespace], str],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse the common flags (and the script's own), run, print the markdown `run` returns."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    if add_arguments is not None:
        add_arguments(parser)
    text = run(parser.parse_args(argv))
    if text:
        print(text)
    return 0

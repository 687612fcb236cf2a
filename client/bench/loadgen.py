"""`cnnserve bench`: a closed-loop gRPC load generator reporting throughput and latency percentiles per point.

A point is (concurrency, images per request). Each of `concurrency` callers sends one request, waits for its
answer and sends the next (closed loop, as Triton's perf_analyzer does), as unary calls or as messages on one
stream per caller (`--rpc stream`). The request is serialized ONCE (client/bench/workloads.py) and the same bytes go out
on every call with no serializers, so the generator spends its CPU on gRPC itself, not on protobuf objects. When
one process cannot drive the server, `--processes N` spreads the callers over N processes (client/bench/callers.py) and
merges their latency samples. Every point also reports the generator's own CPU use, so a reader knows whether
the server or the generator limited the run. No torch, no onnxruntime: this runs anywhere the client does.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import grpc
import numpy as np

from cnnserve.addresses import is_local_target
from cnnserve.client.bench import workloads
from cnnserve.client.bench.callers import LOOPS, RPCS, CallerPool, CallerSettings, Loop, Rpc, WorkerResult
from cnnserve.client.bench.workloads import Workload
from cnnserve.client.channel import message_size_options, server_name_options
from cnnserve.client.config import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, TLSConfig, TLSOptions
from cnnserve.client.connect import wait_connected
from cnnserve.client.errors import BenchError
from cnnserve.errors import ConfigError
from cnnserve.options import add_options, option, option_values
from cnnserve.process import EXIT_FAILURE, EXIT_OK, configure_logging, fail

logger = logging.getLogger(__name__)

Protocol = Literal["classifier", "v2"]
PROTOCOLS: tuple[Protocol, ...] = ("classifier", "v2")
#: uvloop where it is installed: it costs the generator less CPU per call (the figures: benchmarks/RESULTS.md,
#: "What was changed or tried").
DEFAULT_LOOP: Loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def parse_duration(text: str) -> float:
    """'10s', '500ms', '2m' or a plain number of seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 10s, 500ms or 2m, got {text!r}")
    return float(match.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


def parse_int_list(text: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,8,32, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything one `cnnserve bench` run needs, validated at construction; each flag declared on its field."""

    server: str = option(DEFAULT_TARGET, help="the server", metavar="HOST:PORT")
    #: empty: the server's default model (from Classifier.ListModels)
    model: str = option(
        "", help="model name (default: the server's default model)", metavar="NAME", default_text="", env=False
    )
    version: str = option("", help="model version (default: highest READY)", metavar="N", default_text="", env=False)
    protocol: Protocol = option(
        "v2",
        help="v2: Open Inference Protocol ModelInfer with raw uint8 tensors (works against any OIP server); "
        "classifier: cnnserve.v1.Classifier/Classify with encoded PNGs (the server decodes them)",
        choices=PROTOCOLS,
        default_text="",
        env=False,
    )
    rpc: Rpc = option(
        "unary",
        help="unary: one call per request (default); stream: each caller keeps one bidirectional stream "
        "(ModelStreamInfer / ClassifyStream) and sends its requests on it, one at a time",
        choices=RPCS,
        default_text="",
        env=False,
    )
    concurrency: tuple[int, ...] = option(
        (1, 8, 32), help="comma-separated numbers of concurrent callers", convert=parse_int_list,
        metavar="N[,N...]", env=False,
    )  # fmt: skip
    images_per_request: tuple[int, ...] = option(
        (1,), help="comma-separated images per request", convert=parse_int_list, metavar="N[,N...]", env=False
    )
    duration_s: float = option(
        10.0, help="measured window per point", flag="--duration", convert=parse_duration, metavar="TIME",
        default_text="10s", env=False,
    )  # fmt: skip
    warmup_s: float = option(
        2.0, help="unmeasured load before each window", flag="--warmup", convert=parse_duration, metavar="TIME",
        default_text="2s", env=False,
    )  # fmt: skip
    processes: int = option(1, help="generator processes the callers are spread over", metavar="N", env=False)
    # TCP connections per process, callers taking them in turn: with SO_REUSEPORT the kernel spreads connections
    # (not calls) over server workers, so several spread well over 2-4 workers (benchmarks/RESULTS.md).
    connections: int = option(8, help="TCP connections per process, callers take them in turn", metavar="N", env=False)
    timeout_s: float = option(
        30.0, help="deadline of each call", flag="--timeout", convert=parse_duration, metavar="TIME",
        default_text="30s", env=False,
    )  # fmt: skip
    top_k: int = option(1, help="classifier protocol: labels per image", metavar="K", env=False)
    loop: Loop = option(
        DEFAULT_LOOP, help="event loop of the generator processes", choices=LOOPS,
        default_text=f"{DEFAULT_LOOP}: uvloop when installed", env=False,
    )  # fmt: skip
    images: Path | None = option(
        None, help="classifier protocol: folder of images to send (default: synthesized PNGs)", convert=Path,
        metavar="FOLDER", env=False,
    )  # fmt: skip
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    json_out: str | None = option(
        None, help="also write one JSON line per point to FILE (- = stdout)", convert=str, metavar="FILE", env=False
    )
    tls: TLSConfig | None = None  # from the TLSOptions flags; None: plaintext
    token: str | None = option(
        None, help="bearer token sent as authorization, over TLS or to a loopback server only", convert=str,
        metavar="TOKEN",
    )  # fmt: skip
    wait: bool = option(
        False,
        help="wait up to --timeout for the server to accept a connection (one that is starting); "
        "default: stop at once when the connection is refused",
        kind="store_true",
        env=False,
    )

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", self.server):
            raise ConfigError(f"--server must be HOST:PORT (e.g. 127.0.0.1:8001), got {self.server!r}")
        for name in ("concurrency", "images_per_request"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"--{name.replace('_', '-')} must list integers >= 1, got {values!r}")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ConfigError(f"--duration must be > 0 and --warmup >= 0, got {self.duration_s}, {self.warmup_s}")
        if self.processes < 1 or self.connections < 1:
            raise ConfigError(f"--processes and --connections must be >= 1, got {self.processes}, {self.connections}")
        if self.timeout_s <= 0 or self.top_k < 1:
            raise ConfigError(f"--timeout must be > 0 and --top-k >= 1, got {self.timeout_s}, {self.top_k}")
        if self.rpc not in RPCS:
            raise ConfigError(f"--rpc must be one of {', '.join(RPCS)}, got {self.rpc!r}")
        if self.loop not in LOOPS:
            raise ConfigError(f"--loop must be one of {', '.join(LOOPS)}, got {self.loop!r}")
        if self.tls is not None:
            self.tls.read()  # ConfigError now, naming the file, rather than in every generator process
        if self.token and self.tls is None and not is_local_target(self.server):
            raise ConfigError(
                f"refusing to send --token in clear text to {self.server}: anyone on the network could read and "
                "replay it; use TLS (--tls-root-cert)"
            )
        if self.images is not None and not self.images.is_dir():
            raise ConfigError(f"--images must be a folder of encoded images, {self.images} is not a folder")

    @property
    def callers(self) -> CallerSettings:
        return CallerSettings(
            self.server,
            tuple(self.channel_options),
            self.connections,
            self.processes,
            self.loop,
            self.timeout_s,
            self.tls.read() if self.tls else None,
            self.token or None,
        )

    @property
    def channel_options(self) -> list[tuple[str, Any]]:
        return [
            *message_size_options(self.max_message_bytes),
            # A channel of its own subchannel pool gets its own TCP connection, so that N channels are N
            # connections (several server workers behind one SO_REUSEPORT port each get some).
            ("grpc.use_local_subchannel_pool", 1),
            *server_name_options(self.tls),
        ]


@dataclass(frozen=True, slots=True)
class PointResult:
    """One point of the table, merged over processes; `to_json()` is one JSON line."""

    protocol: str
    rpc: str
    model: str
    concurrency: int
    images_per_request: int
    processes: int
    duration_s: float
    requests: int  # successful calls completed inside the window
    requests_per_s: float
    images_per_s: float
    latency_ms: dict[str, float]  # p50, p90, p99, max, mean of successful calls
    errors: dict[str, int]
    loadgen_cpu: list[float] = field(default_factory=list)  # per process: CPU seconds / wall seconds (1.0 = 1 core)
    # time.monotonic() at the window's start and end, for tools that sample the server meanwhile (not in JSON).
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def loadgen_cpu_us_per_request(self) -> float:
        """Generator CPU per call, in microseconds: steadier than throughput on a shared machine."""
        cpu_s = sum(self.loadgen_cpu) * self.duration_s
        return cpu_s / max(1, self.requests + self.error_count) * 1e6

    def to_json(self) -> str:
        return json.dumps(
            {k: v for k, v in asdict(self).items() if k != "window"}
            | {"loadgen_cpu_us_per_request": round(self.loadgen_cpu_us_per_request, 1)},
            sort_keys=False,
        )


def build_workloads(config: BenchConfig) -> tuple[str, list[Workload]]:
    """Connect, then build and probe one request per --images-per-request value."""
    options, credentials = config.channel_options, config.callers.credentials()
    if credentials is None:
        opened = grpc.insecure_channel(config.server, options=options)
    else:
        opened = grpc.secure_channel(config.server, credentials, options)
    with opened as channel:
        outcome = wait_connected(channel, config.server, config.timeout_s, wait=config.wait)
        if outcome == "refused":
            raise BenchError(
                f"no gRPC server at {config.server}: the connection was refused (--wait waits for one that is starting)"
            )
        if outcome == "timeout":
            raise BenchError(f"no gRPC server answered at {config.server} within {config.timeout_s:g} s")
        return workloads.build_workloads(
            channel, config.protocol, config.model, config.version, config.images_per_request,
            timeout_s=config.timeout_s, top_k=config.top_k, folder=config.images,
        )  # fmt: skip


def merge(
    config: BenchConfig,
    model: str,
    workload: Workload,
    concurrency: int,
    window: tuple[float, float],
    parts: Sequence[WorkerResult],
) -> PointResult:
    """One table row from the processes' shares: latency samples concatenated, counts added."""
    latencies_ms = np.concatenate([np.frombuffer(p.latencies_s, dtype=np.float64) for p in parts]) * 1e3
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
    requests = int(latencies_ms.size)
    if requests:
        p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
        latency = {"p50": p50, "p90": p90, "p99": p99, "max": latencies_ms.max(), "mean": latencies_ms.mean()}
    else:
        latency = dict.fromkeys(("p50", "p90", "p99", "max", "mean"), float("nan"))
    return PointResult(
        protocol=config.protocol,
        rpc=config.rpc,
        model=model,
        concurrency=concurrency,
        images_per_request=workload.images_per_request,
        processes=len(parts),
        duration_s=config.duration_s,
        requests=requests,
        requests_per_s=requests / config.duration_s,
        images_per_s=requests * workload.images_per_request / config.duration_s,
        latency_ms={k: round(float(v), 3) for k, v in latency.items()},
        errors=dict(sorted(errors.items())),
        loadgen_cpu=[round(p.cpu_s / p.wall_s, 3) for p in parts],
        window=window,
    )


def run(
    config: BenchConfig,
    on_point: Callable[[PointResult], None] | None = None,
    built: tuple[str, list[Workload]] | None = None,
) -> list[PointResult]:
    """Run every (images per request, concurrency) point in order; `on_point` sees each as it completes.
    `built`: what build_workloads(config) returned, when the caller has connected already."""
    model, workloads = built or build_workloads(config)
    results = []
    with CallerPool(config.callers) as pool:
        for workload in workloads:
            for concurrency in config.concurrency:
                window, parts = pool.run(
                    workload, concurrency, config.rpc, warmup_s=config.warmup_s, duration_s=config.duration_s
                )
                point = merge(config, model, workload, concurrency, window, parts)
                results.append(point)
                if on_point is not None:
                    on_point(point)
    return results


# ---------------------------------------------------------------------------------------------------------------
# Command line

_HEADER = (
    f"{'protocol':<17} {'conc':>5} {'img/req':>7} {'req/s':>9} {'img/s':>10} {'p50 ms':>8} {'p90 ms':>8} "
    f"{'p99 ms':>8} {'max ms':>8} {'errors':>6}  loadgen CPU (cores per process; us/request)"
)


def format_row(point: PointResult) -> str:
    lat = point.latency_ms
    cpu = "+".join(f"{c:.2f}" for c in point.loadgen_cpu)
    return (
        f"{point.protocol + ' ' + point.rpc:<17} {point.concurrency:>5} {point.images_per_request:>7} "
        f"{point.requests_per_s:>9.0f} {point.images_per_s:>10.0f} "
        f"{lat['p50']:>8.3f} {lat['p90']:>8.3f} {lat['p99']:>8.3f} {lat['max']:>8.2f} "
        f"{point.error_count:>6}  {cpu}; {point.loadgen_cpu_us_per_request:.0f}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnserve bench",
        description="Closed-loop load generator: each caller sends a request, waits for the answer, sends the next. "
        "Prints one row per (images per request, concurrency) point: throughput, latency percentiles, errors and "
        "the generator's own CPU use (if it nears 1.0 core per process, the generator limits the run: add "
        "--processes).",
    )
    add_options(parser, BenchConfig)
    add_options(parser, TLSOptions)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        tls = TLSOptions(**option_values(TLSOptions, args)).tls
        config = BenchConfig(tls=tls, **option_values(BenchConfig, args))
    except ConfigError as exc:
        return fail("cnnserve bench", exc)
    table: TextIO = sys.stderr if config.json_out == "-" else sys.stdout
    with contextlib.ExitStack() as stack:
        json_file: TextIO | None = None
        if config.json_out == "-":
            json_file = sys.stdout
        elif config.json_out:
            json_file = stack.enter_context(open(config.json_out, "w", encoding="utf-8"))

        def report(point: PointResult) -> None:
            print(format_row(point), file=table, flush=True)
            if json_file is not None:
                print(point.to_json(), file=json_file, flush=True)

        try:
            built = build_workloads(config)  # before the header: a server that is down is one line, at once
            print(
                f"cnnserve bench: {config.server}, {config.duration_s:g} s per point after {config.warmup_s:g} s "
                f"warm-up, {config.processes} process(es)",
                file=table,
            )
            print(_HEADER, file=table, flush=True)
            results = run(config, on_point=report, built=built)
        except BenchError as exc:
            return fail("cnnserve bench", exc)
    return EXIT_FAILURE if any(p.error_count for p in results) else EXIT_OK

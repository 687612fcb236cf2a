"""Triton's perf_analyzer as a second load generator: one point against one server, as a harness.Measured.

benchmarks/install_perf_analyzer.sh installs it and prints the command that runs it; `find_command` asks it.
perf_analyzer stabilizes on its own (measurement windows until three agree within --stability-percentage); the
figures are those of its last three windows. Its CPU use comes from the kernel's accounting of the child process
(wait4), the server's from /proc sampled over the same run, warm-up windows included on both sides.
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import CpuSampler, Measured, ServerProcess

from cnnserve.client.bench.loadgen import PointResult

INSTALLER = Path(__file__).resolve().parent / "install_perf_analyzer.sh"


@dataclass(frozen=True, slots=True)
class PerfAnalyzerConfig:
    model: str = "fashion_lenet"
    window_ms: int = 1500  # one measurement window
    stability_percent: int = 100  # loose: on a shared 2-core machine 10% (its default) rarely converges
    max_trials: int = 6  # windows tried before it gives up on a point


def find_command() -> list[str] | None:
    """The command prefix that runs perf_analyzer (installing it when the installer can), or None."""
    try:
        done = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return shlex.split(done.stdout.strip().splitlines()[-1])


def measure(
    command: list[str],
    server: ServerProcess,
    config: PerfAnalyzerConfig,
    concurrency: int,
    images: int,
    rpc: str,
) -> Measured:
    """One point: `concurrency` callers, `images` per request, unary calls or one stream each (rpc="stream").
    A point that does not stabilize is tried once more with windows twice as long."""
    measured = _measure_once(command, server, config, concurrency, images, rpc)
    if measured.point.error_count:
        longer = PerfAnalyzerConfig(config.model, config.window_ms * 2, config.stability_percent, config.max_trials)
        measured = _measure_once(command, server, longer, concurrency, images, rpc)
    return measured


def _measure_once(
    command: list[str],
    server: ServerProcess,
    config: PerfAnalyzerConfig,
    concurrency: int,
    images: int,
    rpc: str,
) -> Measured:
    with tempfile.TemporaryDirectory(prefix="cnnserve-pa-") as folder:
        csv_path = Path(folder) / "point.csv"
        argv = [
            *command,
            *("-m", config.model, "-i", "grpc", "-u", server.address, "-b", str(images)),
            *("--concurrency-range", str(concurrency), "--measurement-interval", str(config.window_ms)),
            *("-s", str(config.stability_percent), "--max-trials", str(config.max_trials), "-f", str(csv_path)),
            *(["--streaming"] if rpc == "stream" else []),
        ]
        with CpuSampler(server) as sampler:
            start = time.monotonic()
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert process.stdout is not None
            output = process.stdout.read().decode(errors="replace")
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            end = time.monotonic()
            time.sleep(sampler.interval_s * 2)
        rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
    failed = process.returncode != 0 or not rows
    row = rows[0] if rows else {}
    infer_per_s = float(row.get("Inferences/Second", 0.0))
    latency = {p: float(row.get(f"{p} latency", "nan")) / 1e3 for p in ("p50", "p90", "p99")}
    reason = output.strip().splitlines()[-1][:100] if failed and output.strip() else "failed"
    point = PointResult(
        protocol="v2",
        rpc=rpc,
        model=config.model,
        concurrency=concurrency,
        images_per_request=images,
        processes=1,
        duration_s=end - start,
        requests=0,
        requests_per_s=infer_per_s / images,
        images_per_s=infer_per_s,
        latency_ms={**latency, "max": float("nan"), "mean": float("nan")},
        errors={reason: 1} if failed else {},
        loadgen_cpu=[(usage.ru_utime + usage.ru_stime) / max(end - start, 1e-9)],
        window=(start, end),
    )
    return Measured(server.name, point, sampler.cores(start, end))

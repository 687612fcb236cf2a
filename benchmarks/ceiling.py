"""The ceiling: in-process onnxruntime `session.run` images/s at the batch sizes the server runs, no gRPC at all.

Four ways to drive one session on this machine's cores, measured in interleaved windows (so a neighbour's burst
hits every configuration alike); the best of them is the ceiling the served figures are compared with:
- `ort-default`: onnxruntime's own threading (one pool thread per physical core, spinning), one caller;
- `server`: the server's settings (cnnserve.server.runtime.session_options: intra-op 1, no spinning) with one
  caller thread per core sharing the session;
- `server+1`: the same with one caller more than cores, as the server's default batcher instances run;
- `intra-all`: intra-op threads = cores with the server's other options, one caller.

    .venv/bin/python benchmarks/ceiling.py --model-repository models --model fashion_lenet
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cnnserve.server.config import available_cores
from cnnserve.server.runtime import session_options

BATCH_SIZES = (1, 8, 32, 64)


@dataclass(frozen=True, slots=True)
class CeilingPoint:
    """The median of the interleaved windows of one (configuration, batch size)."""

    config: str
    batch_size: int
    images_per_s: float
    cpu_us_per_image: float  # process CPU (every thread) per image: steadier than throughput on a shared machine


@dataclass(frozen=True, slots=True)
class _Setup:
    name: str
    session: ort.InferenceSession
    callers: int


def _setups(model: Path, cores: int) -> list[_Setup]:
    default = ort.SessionOptions()
    default.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def session(options: ort.SessionOptions) -> ort.InferenceSession:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    return [
        _Setup("ort-default", session(default), 1),
        _Setup("server", session(session_options(1)), cores),
        _Setup("server+1", session(session_options(1)), cores + 1),
        _Setup("intra-all", session(session_options(cores)), 1),
    ]


def _window(run: Callable[[], object], callers: int, seconds: float) -> tuple[int, float, float]:
    """Calls of `run` completed by `callers` threads in `seconds`, with the wall and process CPU seconds."""
    counts = [0] * callers
    start = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def loop(index: int) -> None:
        start.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            run()
            n += 1
        counts[index] = n

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stop_at[0] = wall0 + seconds
    start.wait()
    for thread in threads:
        thread.join()
    return sum(counts), time.perf_counter() - wall0, time.process_time() - cpu0


def measure_ceiling(
    model: Path, batch_sizes: Sequence[int] = BATCH_SIZES, *, seconds: float = 1.0, repeats: int = 3
) -> list[CeilingPoint]:
    """Every configuration at every batch size, `repeats` interleaved windows of `seconds` each."""
    cores = available_cores()
    setups = _setups(model, cores)
    shape = [int(d) for d in setups[0].session.get_inputs()[0].shape[1:]]  # (C, H, W); shape[0] is the batch
    name = setups[0].session.get_inputs()[0].name
    feeds = {n: {name: np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)} for n in batch_sizes}
    for setup in setups:  # the first run at each shape is several times slower: keep it out of the windows
        for feed in feeds.values():
            setup.session.run(None, feed)
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for n, feed in feeds.items():
            for setup in setups:

                def run(session: ort.InferenceSession = setup.session, feed: dict[str, np.ndarray] = feed) -> object:
                    return session.run(None, feed)

                calls, wall_s, cpu_s = _window(run, setup.callers, seconds)
                samples.setdefault((setup.name, n), []).append((calls * n / wall_s, cpu_s / max(1, calls * n) * 1e6))
    return [
        CeilingPoint(config, n, statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
        for (config, n), runs in samples.items()
    ]


def best(points: Sequence[CeilingPoint], batch_size: int) -> CeilingPoint:
    """The fastest configuration at `batch_size`: the ceiling."""
    return max((p for p in points if p.batch_size == batch_size), key=lambda p: p.images_per_s)


def markdown(points: Sequence[CeilingPoint]) -> str:
    configs = list(dict.fromkeys(p.config for p in points))
    sizes = sorted({p.batch_size for p in points})
    table = {(p.config, p.batch_size): p for p in points}
    lines = [
        "| config | " + " | ".join(f"bs={n} img/s (CPU-us/img)" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for config in configs:
        cells = [f"{table[config, n].images_per_s:,.0f} ({table[config, n].cpu_us_per_image:.0f})" for n in sizes]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--model", default="fashion_lenet")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.0, help="one window")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved windows per point (median reported)")
    args = parser.parse_args(argv)
    model = args.model_repository / args.model / str(args.version) / "model.onnx"
    if not model.is_file():
        print(f"ceiling: {model} not found; export a model first (cnnserve export ...)", file=sys.stderr)
        return 3
    print(markdown(measure_ceiling(model, seconds=args.seconds, repeats=args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

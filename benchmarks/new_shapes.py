"""What a batch size the CPU session has not run yet costs: its first run against its steady run (best of 5).

The server runs exact batch sizes on CPU (no padding to warmed sizes, as on CUDA); this is the one-off price.

    .venv/bin/python benchmarks/new_shapes.py models/fashion_lenet/1/model.onnx models/fashion_cnn_bn/1/model.onnx
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from cnnserve.card import CARD_FILE, ModelCard
from cnnserve.server.runtime import ModelRuntime

SIZES = (3, 5, 7, 11, 13, 17, 23, 29, 37, 45, 53, 61)  # none of them run before, in the order given


def timed_ms(runtime: ModelRuntime, batch: np.ndarray) -> float:
    started = time.perf_counter_ns()
    runtime.run(batch)
    return (time.perf_counter_ns() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="model.onnx files with model.json beside them")
    args = parser.parse_args()
    for path in args.models:
        card = ModelCard.load(path.parent / CARD_FILE)
        runtime = ModelRuntime(path, device="cpu", allow_cpu_fallback=False, intra_op_threads=1, max_batch_size=64)
        dtype = np.dtype(card.input.dtype)
        runtime.run(np.zeros((1, *card.input.shape), dtype))  # the session's own first run
        extras = []
        for size in SIZES:
            batch = np.zeros((size, *card.input.shape), dtype)
            first = timed_ms(runtime, batch)
            steady = min(timed_ms(runtime, batch) for _ in range(5))
            extras.append(first - steady)
        print(
            f"{card.name}/{card.version}: a new batch size costs {statistics.median(extras):.2f} ms once (median of "
            f"{len(SIZES)} sizes; max {max(extras):.2f} ms), steady runs {steady:.2f} ms at batch {SIZES[-1]}"
        )


if __name__ == "__main__":
    main()

"""The price of decoding: our Classifier API with encoded PNGs vs the Open Inference Protocol with raw tensors.

One server, the same model, the same points; the classifier requests carry 28x28 PNGs the server must decode
with Pillow and preprocess, the v2 requests carry the uint8 pixels themselves. The ratio is v2 images/s over
classifier images/s.

    .venv/bin/python benchmarks/protocols.py --model-repository models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import Pair, config_from, interleave, paired_table, pairs, script_main, serve

from cnnserve.client.loadgen import BenchConfig

POINTS = ((1, 1), (32, 1), (8, 64))  # (concurrency, images per request)


def compare_protocols(
    repository: Path, config: BenchConfig, *, repeats: int, server_flags: Sequence[str] = ()
) -> list[Pair]:
    with serve("cnnserve", repository, *server_flags) as server:
        runs = interleave([server], config, POINTS, repeats, protocols=("v2", "classifier"))
    return pairs(runs, ("cnnserve", "v2"), ("cnnserve", "classifier"), POINTS)


def markdown(rows: Sequence[Pair]) -> str:
    return paired_table("protocol", ("v2 raw uint8", "classifier PNG"), "v2 / classifier", rows)


def main(argv: Sequence[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> str:
        config = config_from(args)
        return markdown(
            compare_protocols(args.model_repository, config, repeats=args.repeats, server_flags=args.server_flag)
        )

    return script_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())

"""Dynamic batching vs none: the same server started twice, default settings vs `--max-batch-size 1`.

Points: 1, 8 and 32 callers sending 1 image per request, and 8 callers sending 64 images (split into 64 runs of
one image when batching is off). The ratio column is images/s with batching over images/s without.

    .venv/bin/python benchmarks/batching.py --model-repository models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import Pair, config_from, interleave, paired_table, pairs, script_main, serve

from cnnserve.client.bench.loadgen import BenchConfig

POINTS = ((1, 1), (8, 1), (32, 1), (8, 64))  # (concurrency, images per request)
NAMES = ("batching", "--max-batch-size 1")


def compare_batching(
    repository: Path, config: BenchConfig, *, repeats: int, server_flags: Sequence[str] = ()
) -> list[Pair]:
    with (
        serve(NAMES[0], repository, *server_flags) as batching,
        serve(NAMES[1], repository, *server_flags, "--max-batch-size", "1") as single,
    ):
        runs = interleave([batching, single], {"": config}, POINTS, repeats)
    return pairs(runs, (NAMES[0], ""), (NAMES[1], ""), POINTS)


def markdown(rows: Sequence[Pair]) -> str:
    return paired_table("server", NAMES, "batching / none", rows)


def main(argv: Sequence[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> str:
        config = config_from(args)
        return markdown(
            compare_batching(args.model_repository, config, repeats=args.repeats, server_flags=args.server_flag)
        )

    return script_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())

"""One server process vs several: `cnnserve serve` vs `cnnserve serve --workers N` (SO_REUSEPORT), same model.

A single process serves gRPC with one core's worth of Python at most; the workers each bring their own event loop
and batcher. The ratio is images/s with N workers over images/s with one. The load generator spreads its callers
over several connections (`--connections`, default 8 per process) so that the kernel can spread them over the
workers.

    .venv/bin/python benchmarks/workers.py --model-repository models --workers 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import Pair, config_from, interleave, paired_table, pairs, script_main, serve

from cnnserve.client.bench.loadgen import BenchConfig

POINTS = ((1, 1), (32, 1), (8, 64))  # (concurrency, images per request)


def compare_workers(
    repository: Path, config: BenchConfig, *, workers: int, repeats: int, server_flags: Sequence[str] = ()
) -> list[Pair]:
    names = (f"--workers {workers}", "1 worker")
    with (
        serve(names[0], repository, *server_flags, "--workers", str(workers)) as several,
        serve(names[1], repository, *server_flags) as one,
    ):
        runs = interleave([several, one], {"": config}, POINTS, repeats)
    return pairs(runs, (names[0], ""), (names[1], ""), POINTS)


def markdown(rows: Sequence[Pair], workers: int) -> str:
    return paired_table("server", (f"--workers {workers}", "1 worker"), f"{workers} workers / 1", rows)


def main(argv: Sequence[str] | None = None) -> int:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workers", type=int, default=2, help="server processes to compare with one")

    def run(args: argparse.Namespace) -> str:
        config = config_from(args)
        rows = compare_workers(
            args.model_repository, config, workers=args.workers, repeats=args.repeats, server_flags=args.server_flag
        )
        return markdown(rows, args.workers)

    return script_main(argv, __doc__, run, add_arguments)


if __name__ == "__main__":
    sys.exit(main())

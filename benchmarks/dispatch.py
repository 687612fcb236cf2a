"""Eager dispatch (the default) vs waiting out the queue delay: the same server started twice, the second with
`--no-eager-dispatch --max-queue-delay-us 1000`, loaded alike in interleaved runs.

Waiting makes fewer, larger batches: less server CPU per image where gRPC, not the model, is the limit, for more
latency. The ratio column is images/s of the eager server over the waiting one.

    .venv/bin/python benchmarks/dispatch.py --model-repository models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness import config_from, interleave, paired_table, pairs, script_main, serve

POINTS = ((32, 1), (8, 64))
WAITING = ("--no-eager-dispatch", "--max-queue-delay-us", "1000")


def run(args: argparse.Namespace) -> str:
    names = ("eager (default)", "waiting 1000 us")
    flags = tuple(args.server_flag)
    with (
        serve(names[0], args.model_repository, *flags) as eager,
        serve(names[1], args.model_repository, *flags, *WAITING) as waiting,
    ):
        runs = interleave([eager, waiting], {"": config_from(args)}, POINTS, args.repeats)
    rows = pairs(runs, (names[0], ""), (names[1], ""), POINTS)
    return paired_table("server", names, "eager / waiting", rows)


def main(argv: Sequence[str] | None = None) -> int:
    return script_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())

"""What the limits cost: this checkout's server vs the same server built from an older commit, same model.

The baseline is an ordinary (not editable) install of the older commit into a folder of its own, run by a bare
virtual environment whose one .pth file puts that folder, then this checkout's site-packages (for grpc,
onnxruntime, ...; its .pth files, the editable install among them, are not read from there) on sys.path. Make it
outside the repository, e.g.

    git worktree add /tmp/base <commit> && .venv/bin/pip install --no-deps --target /tmp/base-site /tmp/base
    python3.11 -m venv --without-pip /tmp/base-venv
    printf '/tmp/base-site\n%s\n' "$PWD"/.venv/lib/python3.11/site-packages \
        > /tmp/base-venv/lib/python3.11/site-packages/base.pth
    .venv/bin/python benchmarks/hardening.py --baseline-python /tmp/base-venv/bin/python --rpc unary

The ratio is images/s of this checkout over images/s of the baseline, interleaved runs, median of each.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import PORT, Pair, config_from, interleave, paired_table, pairs, script_main, serve, serve_command

from cnnserve.client.bench.loadgen import BenchConfig

POINTS = ((32, 1), (8, 64))  # (concurrency, images per request): the points the hardening must not slow down


def compare(repository: Path, baseline_python: Path, config: BenchConfig, repeats: int) -> list[Pair]:
    names = ("this checkout", "baseline")
    baseline_command = [  # -P: not the checkout's own cnnserve/ folder from the working directory
        *(str(baseline_python), "-P", "-m", "cnnserve.cli", "serve"),
        *("--model-repository", str(repository), "--port", PORT, "--metrics-port", "-1"),
    ]
    with serve(names[0], repository) as current, serve_command(names[1], baseline_command) as baseline:
        runs = interleave([current, baseline], {"": config}, POINTS, repeats)
    return pairs(runs, (names[0], ""), (names[1], ""), POINTS)


def main(argv: Sequence[str] | None = None) -> int:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--baseline-python", type=Path, required=True, help="the baseline's Python (see above)")

    def run(args: argparse.Namespace) -> str:
        rows = compare(args.model_repository, args.baseline_python, config_from(args), args.repeats)
        return paired_table("server", ("this checkout", "baseline"), "this / baseline", rows)

    return script_main(argv, __doc__, run, add_arguments)


if __name__ == "__main__":
    sys.exit(main())

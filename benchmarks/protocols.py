"""The price of decoding and of a call: Classifier PNGs vs v2 raw tensors, and unary calls vs one stream each.

One server, the same model, the same points, four load generator settings:
- v2 raw uint8 vs classifier PNG: the classifier requests carry 28x28 PNGs the server decodes with Pillow and
  preprocesses; the v2 requests carry the uint8 pixels themselves. Ratio: v2 images/s over classifier images/s.
- v2 unary vs v2 stream: each caller sends its requests on one ModelStreamInfer stream instead of one call each
  (perf_analyzer's --streaming). Ratio: stream images/s over unary images/s.

    .venv/bin/python benchmarks/protocols.py --model-repository models
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import Pair, config_from, interleave, paired_table, pairs, script_main, serve

from cnnserve.client.bench.loadgen import BenchConfig

POINTS = ((1, 1), (32, 1), (8, 64))  # (concurrency, images per request)


def compare_protocols(
    repository: Path, config: BenchConfig, *, repeats: int, server_flags: Sequence[str] = ()
) -> tuple[list[Pair], list[Pair]]:
    """(v2 vs classifier, stream vs unary) pairs."""
    configs = {
        "v2": dataclasses.replace(config, protocol="v2", rpc="unary"),
        "classifier": dataclasses.replace(config, protocol="classifier", rpc="unary"),
        "v2 stream": dataclasses.replace(config, protocol="v2", rpc="stream"),
    }
    with serve("cnnserve", repository, *server_flags) as server:
        runs = interleave([server], configs, POINTS, repeats)
    decoding = pairs(runs, ("cnnserve", "v2"), ("cnnserve", "classifier"), POINTS)
    streaming = pairs(runs, ("cnnserve", "v2 stream"), ("cnnserve", "v2"), POINTS)
    return decoding, streaming


def markdown_decoding(rows: Sequence[Pair]) -> str:
    return paired_table("protocol", ("v2 raw uint8", "classifier PNG"), "v2 / classifier", rows)


def markdown_streaming(rows: Sequence[Pair]) -> str:
    return paired_table("rpc", ("v2 stream", "v2 unary"), "stream / unary", rows)


def main(argv: Sequence[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> str:
        config = config_from(args)
        decoding, streaming = compare_protocols(
            args.model_repository, config, repeats=args.repeats, server_flags=args.server_flag
        )
        return markdown_decoding(decoding) + "\n\n" + markdown_streaming(streaming)

    return script_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())

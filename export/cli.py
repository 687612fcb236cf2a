"""`cnnserve export`: flags and environment to an ExportConfig, run the export, report in one place."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cnnserve.errors import CnnserveError, ConfigError
from cnnserve.export.config import ExportConfig
from cnnserve.options import add_options, option_values
from cnnserve.process import EXIT_OK, configure_logging, fail

PROG = "cnnserve export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Export a training checkpoint to ONNX (uint8 NCHW pixels in, logits out, normalization inside the "
            "graph, dynamic batch axis, the model card in the metadata), check it against PyTorch with "
            "onnxruntime, and write it as <repository>/<name>/<version>/{model.onnx,model.json}. Nothing is "
            "written when a check fails."
        ),
    )
    add_options(parser, ExportConfig)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = ExportConfig(**option_values(ExportConfig, args))
    except ConfigError as exc:
        return fail(PROG, exc)
    # Imported here so `--help` and flag errors do not wait for torch and onnx to load.
    from cnnserve.export.exporter import export_checkpoint

    try:
        result = export_checkpoint(config)
    except CnnserveError as exc:  # unreadable checkpoint, data or repository: 3; a failed parity check: 1
        return fail(PROG, exc)
    print(f"exported {result.path} (sha256 {result.card.sha256}, opset {result.card.opset})")
    print(result.report.summary())
    return EXIT_OK

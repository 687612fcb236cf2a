"""`cnnserve export`: flags and environment to an ExportConfig, run the export, report in one place."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cnnserve.errors import CheckpointError, CnnserveError, ConfigError, DataError
from cnnserve.export.config import (
    DEFAULT_OPSET,
    DEFAULT_PARITY_ATOL,
    MAX_OPSET,
    MIN_OPSET,
    PRETRAINED,
    ExportConfig,
)
from cnnserve.export.repository import RepositoryError
from cnnserve.process import EXIT_FAILURE, EXIT_OK, EXIT_STARTUP, EXIT_USAGE, configure_logging

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
    parser.add_argument(
        "checkpoint", type=Path, nargs="?", metavar="CHECKPOINT", help="a checkpoint written by cnnserve train"
    )
    parser.add_argument(
        "--pretrained",
        choices=sorted(PRETRAINED),
        default=None,
        metavar="ARCH",
        help="export a pretrained zoo network instead of a checkpoint: "
        + "; ".join(f"{arch} is {what}" for arch, what in PRETRAINED.items()),
    )
    parser.add_argument(
        "--repository",
        type=Path,
        metavar="PATH",
        default=Path(os.environ.get("CNNSERVE_MODEL_REPOSITORY", "models")),
        help="the model repository to write into (default: $CNNSERVE_MODEL_REPOSITORY or models)",
    )
    parser.add_argument(
        "--name", help="model name: the folder under the repository (default: the name in the checkpoint's card)"
    )
    parser.add_argument(
        "--version",
        type=int,
        metavar="N",
        default=None,
        help="version number: the folder under the model (default: one more than the highest existing, or 1)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the version folder if it exists (default: refuse)"
    )
    parser.add_argument(
        "--opset",
        type=int,
        metavar="N",
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--architecture",
        default=None,
        metavar="ARCH",
        help="refuse a checkpoint of any other zoo architecture (e.g. lenet, cnn_bn; default: accept any)",
    )
    parser.add_argument(
        "--parity-data",
        type=_parity_data,
        metavar="PATH|card|none",
        default="card",
        help="real images for the parity check as well as random pixels: an IDX folder (its t10k test split is "
        "used, e.g. /usr/share/datasets/fashion-mnist) or a folder of class sub-folders of PNG/JPEG images; "
        "'none': random pixels only (default: 'card', the IDX folder the checkpoint's card says the model was "
        "tested on, when it is still there, else random pixels only)",
    )
    parser.add_argument(
        "--parity-limit", type=int, default=None, metavar="N", help="use at most this many real images (default: all)"
    )
    parser.add_argument(
        "--parity-atol",
        type=float,
        metavar="X",
        default=DEFAULT_PARITY_ATOL,
        help=f"largest allowed |onnxruntime logit - PyTorch logit| (default: {DEFAULT_PARITY_ATOL:g})",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    return parser


def _parity_data(text: str) -> Path | Literal["card"] | None:
    if text == "none":
        return None
    if text == "card":
        return "card"
    return Path(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = ExportConfig(
            checkpoint=args.checkpoint,
            pretrained=args.pretrained,
            repository=args.repository,
            name=args.name,
            version=args.version,
            force=args.force,
            opset=args.opset,
            architecture=args.architecture,
            parity_data=args.parity_data,
            parity_limit=args.parity_limit,
            parity_atol=args.parity_atol,
        )
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Imported here so `--help` and flag errors do not wait for torch and onnx to load.
    from cnnserve.export.exporter import export_checkpoint

    try:
        result = export_checkpoint(config)
    except (CheckpointError, DataError, RepositoryError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except CnnserveError as exc:  # a failed parity check (with its report), or the exporter itself
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"exported {result.path} (sha256 {result.card.sha256}, opset {result.card.opset})")
    print(result.report.summary())
    return EXIT_OK

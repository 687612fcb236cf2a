"""`cnnserve classify`: classify files, folders, glob patterns and @lists of images through a server (or --local).

Images travel as their encoded file bytes and the server decodes them with cnnserve.preprocess.to_pixels, so
the pixels are exactly those training saw, whatever the model's size or channels (the client needs no model
knowledge), and a request is usually smaller than the decoded pixels. --local runs the same function in-process.
Rows are written in input order; see output.py (in this package) for the columns and job.py for how memory
stays bounded.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from itertools import islice
from typing import TYPE_CHECKING, Any

from cnnserve.client.classify import job
from cnnserve.client.classify.config import ClassifyConfig
from cnnserve.client.classify.inputs import batched, check_list_files, expand
from cnnserve.client.classify.output import Row, RowWriter, format_of, prepare_resume
from cnnserve.client.classify.scoring import Evaluation
from cnnserve.client.config import TLSOptions
from cnnserve.client.errors import InvalidArgument, NotFound, ServerUnreachable
from cnnserve.client.results import Classification, ModelVersion
from cnnserve.errors import CnnserveError, ConfigError
from cnnserve.options import add_options
from cnnserve.process import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, configure_logging, fail

if TYPE_CHECKING:
    from cnnserve.client.client import Client

log = logging.getLogger(__name__)
PROG = "cnnserve classify"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Classify images through a cnnserve server (or locally) and write one row per image, in order.",
        epilog="Exit codes: 0 all classified, 1 some inputs failed, 2 usage, 3 could not start (server down), "
        "130 interrupted (rerun with --resume).",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image file, folder (recursive), glob pattern, or @list.txt"
    )
    add_options(parser, ClassifyConfig)
    add_options(parser, TLSOptions)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    parser.add_argument("--verbose", "-v", action="count", default=0)
    return parser


def open_classifier(
    config: ClassifyConfig, stack: ExitStack
) -> tuple[Callable[[list[str]], list[Classification]], tuple[str, ...]]:
    """The function that classifies one batch of paths, and the labels of the model that answers."""
    if config.local:
        from cnnserve.client.classify.local import LocalClassifier

        local = LocalClassifier(config.local)
        return (lambda paths: local.classify(paths, top_k=config.top_k)), local.labels
    from cnnserve.client.client import Client

    client = stack.enter_context(Client(config.client))
    versions = [m for m in client.models() if m.ready and (config.version is None or m.version == config.version)]
    name = config.model or _default_model(client, config.server, versions)
    chosen = [m for m in versions if m.name == name]
    if not chosen:
        ready = sorted({f"{m.name}/{m.version}" for m in versions})
        raise NotFound(
            f"the server at {config.server} has no ready model {name!r} (version {config.version or 'any'}); "
            f"ready: {', '.join(ready) or 'none'}"
        )

    def classify(paths: list[str]) -> list[Classification]:
        return client.classify(paths, top_k=config.top_k, model=name, version=config.version, on_error="return")

    return classify, chosen[-1].labels


def _default_model(client: Client, server: str, ready: list[ModelVersion]) -> str:
    """The server's default model, or the CLI's own words when it has none."""
    try:
        return client.default_model()
    except InvalidArgument:
        names = ", ".join(sorted({m.name for m in ready})) or "none"
        raise InvalidArgument(f"the server at {server} has no default model; pass --model, one of: {names}") from None


def _progress(config: ClassifyConfig, stack: ExitStack) -> Any:
    if config.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = stack.enter_context(tqdm(unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1))
    if all(not arg.startswith("@") or os.path.isfile(arg[1:]) for arg in config.inputs):
        # Count the inputs in the background (names only) so the bar can show an ETA without waiting for it.
        def count() -> None:
            total = sum(1 for _ in _paths(config, set()))
            bar.total = total
            bar.refresh()

        threading.Thread(target=count, daemon=True, name="count-inputs").start()
    return bar


def _paths(config: ClassifyConfig, done: set[str] | dict[str, str]) -> Iterator[str]:
    paths = (path for path in expand(config.inputs) if path not in done)
    return islice(paths, config.limit) if config.limit else paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        config = ClassifyConfig.from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    if config.resume and config.output == "-":
        parser.error("--resume needs an --output file to read what is already done")
    if missing := check_list_files(config.inputs):
        parser.error(f"list file not found: {', '.join(m[1:] for m in missing)}")
    try:
        return _run(config, parser)
    except KeyboardInterrupt:  # before the job started (while connecting) or after it ended: nothing to flush
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _run(config: ClassifyConfig, parser: argparse.ArgumentParser) -> int:
    fmt = format_of(config.output, config.format)
    with ExitStack() as stack:
        try:
            classify, labels = open_classifier(config, stack)
        except ServerUnreachable as exc:
            return fail(PROG, exc, "starting")
        except (CnnserveError, OSError) as exc:
            return fail(PROG, exc, "starting", what="cannot start: ")
        if config.top_k is not None and not 1 <= config.top_k <= len(labels):
            parser.error(f"--top-k must be in 1..{len(labels)} (the model's classes), got {config.top_k}")
        try:
            done = prepare_resume(config.output, fmt) if config.resume else {}
            writer = RowWriter(config.output, fmt, append=config.resume)
        except (CnnserveError, OSError) as exc:
            return fail(PROG, exc, "starting", what=f"cannot write {config.output}: ")
        stack.callback(writer.close)
        evaluation = Evaluation(labels) if config.evaluate else None
        if evaluation is not None:
            for path, label in done.items():
                evaluation.add(path, label)

        def sink(rows: list[Row]) -> None:
            writer.write(rows)
            if evaluation is not None:
                for row in rows:
                    evaluation.add(row.path, None if row.error else row.label)

        batches = batched(_paths(config, done), config.batch_size)
        summary = job.run(batches, classify, sink, concurrency=config.concurrency, progress=_progress(config, stack))
    return _report(config, summary, evaluation, skipped=len(done))


def _report(config: ClassifyConfig, summary: job.Summary, evaluation: Evaluation | None, skipped: int) -> int:
    if not config.quiet or summary.stopped or summary.interrupted:
        resumed = f" ({skipped} already in {config.output})" if skipped else ""
        print(f"{PROG}: {summary.line()}{resumed}", file=sys.stderr)
    if evaluation is not None and not summary.interrupted:
        print(evaluation.report(), file=sys.stderr if config.output == "-" else sys.stdout)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.stopped:
        return EXIT_FAILURE
    if summary.written == 0 and skipped == 0:
        print(f"{PROG}: no images found in {' '.join(config.inputs)}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILURE if summary.failed else EXIT_OK

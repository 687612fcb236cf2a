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
from cnnserve.client.classify.inputs import batched, check_list_files, expand
from cnnserve.client.classify.output import Row, RowWriter, format_of, prepare_resume
from cnnserve.client.classify.scoring import Evaluation
from cnnserve.client.config import DEFAULT_TARGET, ClientConfig, RetryPolicy, TLSConfig
from cnnserve.client.errors import InvalidArgument, NotFound, ServerUnreachable
from cnnserve.client.results import Classification, ModelVersion
from cnnserve.errors import CnnserveError
from cnnserve.process import EXIT_FAILURE, EXIT_OK, EXIT_STARTUP, EXIT_USAGE, configure_logging

if TYPE_CHECKING:
    from cnnserve.client.client import Client

log = logging.getLogger(__name__)
PROG = "cnnserve classify"
EXIT_INTERRUPTED = 130  # the shell's code for a job ended by SIGINT


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Classify images through a cnnserve server (or locally) and write one row per image, in order.",
        epilog="Exit codes: 0 all classified, 1 some inputs failed, 2 usage, 3 could not start (server down), "
        "130 interrupted (rerun with --resume).",
    )
    add = parser.add_argument
    add("inputs", nargs="+", metavar="INPUT", help="image file, folder (recursive), glob pattern, or @list.txt")
    add(
        "--server",
        metavar="HOST:PORT",
        default=env("CNNSERVE_SERVER", DEFAULT_TARGET),
        help="HOST:PORT (env CNNSERVE_SERVER)",
    )
    add("--model", metavar="NAME", help="model name (default: the server's default model)")
    add("--version", type=int, metavar="N", help="model version (default: the highest ready one)")
    add("--top-k", type=int, metavar="K", help="labels per image in the top_k column (default: the server's, 5)")
    add("--batch-size", type=_positive, metavar="N", default=32, help="images per request (default 32)")
    add("--concurrency", type=_positive, metavar="C", default=4, help="requests in flight (default 4)")
    add("--output", metavar="FILE", default="-", help="results.csv, results.jsonl, or - for stdout (default)")
    add("--format", choices=("csv", "jsonl"), help="row format (default: from the --output suffix; csv)")
    add("--resume", action="store_true", help="skip inputs already in --output; redo its failed rows")
    add("--evaluate", action="store_true", help="score against class-named folders: accuracy, confusion matrix")
    add("--local", metavar="models/NAME[/VERSION]", help="run in-process with onnxruntime; no server")
    add("--limit", type=_positive, metavar="N", help="classify at most this many inputs (after --resume's skips)")
    add("--timeout", type=float, metavar="S", default=60.0, help="seconds per batch, retries included (default 60)")
    add("--retries", type=int, metavar="N", default=4, help="retries of a batch refused as UNAVAILABLE (default 4)")
    add(
        "--connect-timeout",
        type=float,
        metavar="S",
        default=5.0,
        help="seconds to wait for a first connection (default 5; a refused one fails at once unless --wait)",
    )
    add(
        "--wait",
        action="store_true",
        help="keep trying to connect for --connect-timeout seconds (a server that is starting); "
        "default: stop at once when the connection is refused",
    )
    add("--tls-root-cert", metavar="PEM", help="PEM root certificate: use TLS and trust this CA")
    add("--tls-client-cert", metavar="PEM", help="PEM client certificate (mutual TLS, with --tls-client-key)")
    add("--tls-client-key", metavar="PEM", help="PEM client key")
    add(
        "--token",
        metavar="TOKEN",
        default=env("CNNSERVE_TOKEN"),
        help="bearer token sent as authorization (env CNNSERVE_TOKEN)",
    )
    add(
        "--allow-insecure-token",
        action="store_true",
        help="send --token even over plaintext to a non-loopback server (refused by default: it travels in clear)",
    )
    add("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    add("--verbose", "-v", action="count", default=0)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def client_config(args: argparse.Namespace) -> ClientConfig:
    tls = TLSConfig.from_flags(args.tls_root_cert, args.tls_client_cert, args.tls_client_key)
    return ClientConfig.create(
        args.server,
        token=args.token,
        timeout_s=args.timeout,
        connect_timeout_s=args.connect_timeout,
        wait_for_server=args.wait,
        retry=RetryPolicy(max_attempts=1 + max(0, args.retries)),
        tls=tls,
        allow_insecure_token=args.allow_insecure_token,
    )


def open_classifier(
    args: argparse.Namespace, stack: ExitStack
) -> tuple[Callable[[list[str]], list[Classification]], tuple[str, ...]]:
    """The function that classifies one batch of paths, and the labels of the model that answers."""
    if args.local:
        from cnnserve.client.classify.local import LocalClassifier

        local = LocalClassifier(args.local)
        return (lambda paths: local.classify(paths, top_k=args.top_k)), local.labels
    from cnnserve.client.client import Client

    client = stack.enter_context(Client(client_config(args)))
    versions = [m for m in client.models() if m.ready and (args.version is None or m.version == args.version)]
    name = args.model or _default_model(client, args.server, versions)
    chosen = [m for m in versions if m.name == name]
    if not chosen:
        ready = sorted({f"{m.name}/{m.version}" for m in versions})
        raise NotFound(
            f"the server at {args.server} has no ready model {name!r} (version {args.version or 'any'}); "
            f"ready: {', '.join(ready) or 'none'}"
        )

    def classify(paths: list[str]) -> list[Classification]:
        return client.classify(paths, top_k=args.top_k, model=name, version=args.version, on_error="return")

    return classify, chosen[-1].labels


def _default_model(client: Client, server: str, ready: list[ModelVersion]) -> str:
    """The server's default model, or the CLI's own words when it has none."""
    try:
        return client.default_model()
    except InvalidArgument:
        names = ", ".join(sorted({m.name for m in ready})) or "none"
        raise InvalidArgument(f"the server at {server} has no default model; pass --model, one of: {names}") from None


def _progress(args: argparse.Namespace, stack: ExitStack) -> Any:
    if args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = stack.enter_context(tqdm(unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1))
    if all(not arg.startswith("@") or os.path.isfile(arg[1:]) for arg in args.inputs):
        # Count the inputs in the background (names only) so the bar can show an ETA without waiting for it.
        def count() -> None:
            total = sum(1 for _ in _paths(args, set()))
            bar.total = total
            bar.refresh()

        threading.Thread(target=count, daemon=True, name="count-inputs").start()
    return bar


def _paths(args: argparse.Namespace, done: set[str] | dict[str, str]) -> Iterator[str]:
    paths = (path for path in expand(args.inputs) if path not in done)
    return islice(paths, args.limit) if args.limit else paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if args.resume and args.output == "-":
        parser.error("--resume needs an --output file to read what is already done")
    if missing := check_list_files(args.inputs):
        parser.error(f"list file not found: {', '.join(m[1:] for m in missing)}")
    try:
        return _run(args, parser)
    except KeyboardInterrupt:  # before the job started (while connecting) or after it ended: nothing to flush
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    fmt = format_of(args.output, args.format)
    with ExitStack() as stack:
        try:
            classify, labels = open_classifier(args, stack)
        except ServerUnreachable as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_STARTUP
        except (CnnserveError, OSError) as exc:
            print(f"{PROG}: cannot start: {exc}", file=sys.stderr)
            return EXIT_STARTUP
        if args.top_k is not None and not 1 <= args.top_k <= len(labels):
            parser.error(f"--top-k must be in 1..{len(labels)} (the model's classes), got {args.top_k}")
        try:
            done = prepare_resume(args.output, fmt) if args.resume else {}
            writer = RowWriter(args.output, fmt, append=args.resume)
        except (CnnserveError, OSError) as exc:
            print(f"{PROG}: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_STARTUP
        stack.callback(writer.close)
        evaluation = Evaluation(labels) if args.evaluate else None
        if evaluation is not None:
            for path, label in done.items():
                evaluation.add(path, label)

        def sink(rows: list[Row]) -> None:
            writer.write(rows)
            if evaluation is not None:
                for row in rows:
                    evaluation.add(row.path, None if row.error else row.label)

        batches = batched(_paths(args, done), args.batch_size)
        summary = job.run(batches, classify, sink, concurrency=args.concurrency, progress=_progress(args, stack))
    return _report(args, summary, evaluation, skipped=len(done))


def _report(args: argparse.Namespace, summary: job.Summary, evaluation: Evaluation | None, skipped: int) -> int:
    if not args.quiet or summary.stopped or summary.interrupted:
        resumed = f" ({skipped} already in {args.output})" if skipped else ""
        print(f"{PROG}: {summary.line()}{resumed}", file=sys.stderr)
    if evaluation is not None and not summary.interrupted:
        print(evaluation.report(), file=sys.stderr if args.output == "-" else sys.stdout)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.stopped:
        return EXIT_FAILURE
    if summary.written == 0 and skipped == 0:
        print(f"{PROG}: no images found in {' '.join(args.inputs)}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILURE if summary.failed else EXIT_OK

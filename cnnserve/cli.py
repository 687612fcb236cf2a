"""The one `cnnserve` command: a table of subcommands, each a `main(argv) -> int` imported only when used.

Importing lazily keeps `cnnserve classify` free of torch and `cnnserve train` free of grpc, and keeps
`cnnserve --help` fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

# name -> (module that defines `main(argv) -> int`, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cnnserve.training.train", "train a model from the zoo on IDX files or image folders"),
    "export": (
        "cnnserve.export.cli",
        "export a checkpoint to ONNX in a model repository, with a parity check",
    ),
    "import": ("cnnserve.export.importer", "import any ONNX image classifier into a model repository"),
    "serve": ("cnnserve.server.app", "serve a model repository over gRPC with dynamic batching"),
    "classify": (
        "cnnserve.client.batch",
        "classify files and folders of images through a server (or locally)",
    ),
    "bench": ("cnnserve.client.loadgen", "closed-loop load generator: throughput and latency percentiles"),
}

#: Exit codes shared by every subcommand.
EXIT_OK = 0
EXIT_FAILURE = 1  # the job ran but some of it failed (a parity check, some inputs)
EXIT_USAGE = 2  # bad flags or configuration (argparse's own code)
EXIT_STARTUP = 3  # could not start: missing files, unreachable server, port in use


def configure_logging(verbose: int = 0) -> None:
    """Called by subcommand `main()`s only, never at import time."""
    level = os.environ.get("CNNSERVE_LOG_LEVEL", "").upper() or (
        "DEBUG" if verbose > 1 else "INFO" if verbose == 1 else "WARNING"
    )
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: cnnserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "Run 'cnnserve <command> --help' for the options of one command."]
    return "\n".join(lines)


def load_subcommand(name: str) -> Callable[[Sequence[str] | None], int]:
    module_name, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    entry: Callable[[Sequence[str] | None], int] = module.main
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return EXIT_OK if args else EXIT_USAGE
    if args[0] == "--version":
        from cnnserve import __version__

        print(f"cnnserve {__version__}")
        return EXIT_OK
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"cnnserve: unknown command {name!r}; expected one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        entry = load_subcommand(name)
    except ImportError as exc:
        print(
            f"cnnserve {name}: this install lacks what the command needs ({exc.name or exc}); "
            f"install the matching extra, e.g. pip install 'cnnserve[{_extra_for(name)}]'",
            file=sys.stderr,
        )
        return EXIT_STARTUP
    return entry(rest)


def _extra_for(name: str) -> str:
    return {"train": "train", "export": "train", "serve": "server,cpu"}.get(name, "client")


if __name__ == "__main__":
    sys.exit(main())

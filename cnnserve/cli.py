"""The one `cnnserve` command: a table of subcommands, each a `main(argv) -> int` imported only when used.

Importing lazily keeps `cnnserve classify` free of torch and `cnnserve train` free of grpc, and keeps
`cnnserve --help` fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from cnnserve.process import EXIT_OK, EXIT_STARTUP, EXIT_USAGE

# name -> (module that defines `main(argv) -> int`, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cnnserve.training.train", "train a model from the zoo on IDX files or image folders"),
    "export": (
        "cnnserve.export.cli",
        "export a checkpoint to ONNX in a model repository, with a parity check",
    ),
    "import": ("cnnserve.export.importer", "import any ONNX image classifier into a model repository"),
    "serve": ("cnnserve.server.app", "serve a model repository over gRPC with dynamic batching"),
    "demo": ("cnnserve.demo", "serve a repository, classify the sample images through it, keep serving (make serve)"),
    "classify": (
        "cnnserve.client.classify.batch",
        "classify files and folders of images through a server (or locally)",
    ),
    "bench": ("cnnserve.client.bench.loadgen", "closed-loop load generator: throughput and latency percentiles"),
}


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
    return {"train": "train", "export": "train", "serve": "server,cpu", "demo": "server,client,cpu"}.get(name, "client")


if __name__ == "__main__":
    sys.exit(main())

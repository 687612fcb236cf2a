"""ClassifyConfig: the one frozen configuration of `cnnserve classify`, each flag declared once on its field.

Flags come from the fields (cnnserve.options); only --server and --token read a variable (CNNSERVE_SERVER,
CNNSERVE_TOKEN), as before. The positional INPUTs, --quiet and --verbose are the parser's own: they are not
options of the job (and -q/-v are short flags, which option() does not declare).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from cnnserve.client.config import DEFAULT_TARGET, ClientConfig, RetryPolicy, TLSConfig, TLSOptions
from cnnserve.options import option, option_values


def positive(text: str) -> int:
    """A flag's value that must be an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


@dataclass(frozen=True, slots=True)
class ClassifyConfig:
    """Everything one `cnnserve classify` run needs; times in seconds."""

    inputs: tuple[str, ...] = ()
    server: str = option(DEFAULT_TARGET, help="HOST:PORT", metavar="HOST:PORT")
    model: str | None = option(
        None, help="model name (default: the server's default model)", convert=str, metavar="NAME", env=False
    )
    version: int | None = option(
        None, help="model version (default: the highest ready one)", convert=int, metavar="N", env=False
    )
    top_k: int | None = option(
        None, help="labels per image in the top_k column (default: the server's, 5)", convert=int, metavar="K",
        env=False,
    )  # fmt: skip
    batch_size: int = option(32, help="images per request", convert=positive, metavar="N", env=False)
    concurrency: int = option(4, help="requests in flight", convert=positive, metavar="C", env=False)
    output: str = option(
        "-", help="results.csv, results.jsonl, or - for stdout", metavar="FILE", default_text="-: stdout", env=False
    )
    format: str | None = option(
        None, help="row format (default: from the --output suffix; csv)", convert=str, choices=("csv", "jsonl"),
        env=False,
    )  # fmt: skip
    resume: bool = option(
        False, help="skip inputs already in --output; redo its failed rows", kind="store_true", env=False
    )
    evaluate: bool = option(
        False, help="score against class-named folders: accuracy, confusion matrix", kind="store_true", env=False
    )
    local: str | None = option(
        None, help="run in-process with onnxruntime; no server", convert=str, metavar="models/NAME[/VERSION]",
        env=False,
    )  # fmt: skip
    limit: int | None = option(
        None, help="classify at most this many inputs (after --resume's skips)", convert=positive, metavar="N",
        env=False,
    )  # fmt: skip
    timeout_s: float = option(
        60.0, help="seconds per batch, retries included", flag="--timeout", metavar="S", default_text="60", env=False
    )
    retries: int = option(4, help="retries of a batch refused as UNAVAILABLE", metavar="N", env=False)
    connect_timeout_s: float = option(
        5.0,
        help="seconds to wait for a first connection (a refused one fails at once unless --wait)",
        flag="--connect-timeout",
        metavar="S",
        default_text="5",
        env=False,
    )
    wait: bool = option(
        False,
        help="keep trying to connect for --connect-timeout seconds (a server that is starting); "
        "default: stop at once when the connection is refused",
        kind="store_true",
        env=False,
    )
    token: str | None = option(None, help="bearer token sent as authorization", convert=str, metavar="TOKEN")
    allow_insecure_token: bool = option(
        False,
        help="send --token even over plaintext to a non-loopback server (refused by default: it travels in clear)",
        kind="store_true",
        env=False,
    )
    tls: TLSConfig | None = None  # from the TLSOptions flags; None: plaintext
    quiet: bool = False  # no progress bar and no summary

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ClassifyConfig:
        """The config of parsed flags (and CNNSERVE_SERVER, CNNSERVE_TOKEN)."""
        tls = TLSOptions(**option_values(TLSOptions, args, environ)).tls
        return cls(inputs=tuple(args.inputs), tls=tls, quiet=args.quiet, **option_values(cls, args, environ))

    @property
    def client(self) -> ClientConfig:
        """How the job's Client reaches the server."""
        return ClientConfig.create(
            self.server,
            token=self.token,
            timeout_s=self.timeout_s,
            connect_timeout_s=self.connect_timeout_s,
            wait_for_server=self.wait,
            retry=RetryPolicy(max_attempts=1 + max(0, self.retries)),
            tls=self.tls,
            allow_insecure_token=self.allow_insecure_token,
        )

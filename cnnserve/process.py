"""What every `cnnserve` program shares as a process: its exit codes and how it configures logging.

The subcommands' `main()`s import these from here, below the dispatcher in `cnnserve.cli`, so that imports only
go down: the dispatcher imports the subcommands, never the other way round.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

EXIT_OK = 0
EXIT_FAILURE = 1  # the job ran but some of it failed (a parity check, some inputs)
EXIT_USAGE = 2  # bad flags or configuration (argparse's own code)
EXIT_STARTUP = 3  # could not start: missing files, unreachable server, port in use
EXIT_INTERRUPTED = 130  # the shell's code for a job ended by SIGINT

Phase = Literal["configuring", "starting", "running"]


def exit_code(error: BaseException, phase: Phase = "running") -> int:
    """The one map of errors to exit codes: any error while the flags become a config (`configuring`) is
    EXIT_USAGE; any error while the job starts (`starting`: connecting, opening its files; a setting refused
    there too, such as a token in clear text) is EXIT_STARTUP; once it runs, the error's own class says
    (CnnserveError.exit_code: EXIT_USAGE for a ConfigError, EXIT_STARTUP for inputs it could not read,
    EXIT_FAILURE otherwise; any other exception EXIT_FAILURE)."""
    if phase == "configuring":
        return EXIT_USAGE
    if phase == "starting":
        return EXIT_STARTUP
    code: int = getattr(error, "exit_code", EXIT_FAILURE)
    return code


def fail(prog: str, error: BaseException, phase: Phase = "running", what: str = "") -> int:
    """Say `prog: <what><error>` on stderr and return the exit code of `error` (exit_code)."""
    print(f"{prog}: {what}{error}", file=sys.stderr)
    return exit_code(error, phase)


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

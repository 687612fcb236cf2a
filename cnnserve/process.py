"""What every `cnnserve` program shares as a process: its exit codes and how it configures logging.

The subcommands' `main()`s import these from here, below the dispatcher in `cnnserve.cli`, so that imports only
go down: the dispatcher imports the subcommands, never the other way round.
"""

from __future__ import annotations

import logging
import os
import sys

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

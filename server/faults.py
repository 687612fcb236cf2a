"""Server faults: the correlation id a client's message quotes, and tracebacks logged at most once a minute each.

A fault the client did not cause (a bug, onnxruntime failing a batch) is logged with its details under a short
reference; the client sees only the reference, never server paths or onnxruntime's text. A fault that repeats is
logged once per distinct error per minute, then with the count of the repeats it stood for; a repeat quotes the
reference of the occurrence that was logged.
"""

from __future__ import annotations

import logging
import secrets
import time

logger = logging.getLogger(__name__)

#: Seconds during which one distinct error is logged once.
WINDOW_S = 60.0
_MAX_KEYS = 1024  # distinct errors remembered; past this the oldest are forgotten (and may log again)


class FaultLog:
    """Rate-limited logging of server faults, keyed by (where, error type, first line of its message)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        # key -> (logged at, its reference, repeats since)
        self._seen: dict[tuple[str, str, str], tuple[float, str, int]] = {}

    def report(self, where: str, error: BaseException, *, traceback: bool = True) -> str:
        """Log `error` (unless the same one was logged in the last window) and return the reference to quote."""
        key = (where, type(error).__name__, str(error).split("\n", 1)[0][:200])
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._seen[key] = (seen[0], seen[1], seen[2] + 1)
            return seen[1]
        repeats = seen[2] if seen is not None else 0
        if seen is None and len(self._seen) >= _MAX_KEYS:
            self._seen.pop(next(iter(self._seen)))
        ref = secrets.token_hex(4)
        self._seen[key] = (now, ref, 0)
        also = f" (and {repeats} more like it in the last {self.window_s:.0f} s)" if repeats else ""
        logger.error(
            "%s failed [ref %s]%s: %s: %s",
            where,
            ref,
            also,
            type(error).__name__,
            error,
            exc_info=error if traceback else None,
        )
        return ref


#: The server's one fault log (every server in a process shares it: the window is about the log, not the server).
FAULTS = FaultLog()

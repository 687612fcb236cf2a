"""A call's deadline, and the pause before each of its retries: the one arithmetic Client and AsyncClient share,
so the sync and asyncio behaviour cannot drift apart.
"""

from __future__ import annotations

import logging
import time

from cnnserve.client.config import ClientConfig, RetryPolicy
from cnnserve.client.errors import ClientError, Unavailable

log = logging.getLogger(__name__)


def deadline_of(timeout: float | None, config: ClientConfig) -> float | None:
    """Absolute time.monotonic() by which a whole method call (all its RPCs and retries) must end."""
    seconds = config.timeout_s if timeout is None else timeout
    return None if seconds is None else time.monotonic() + seconds


def remaining(deadline: float | None) -> float | None:
    """The timeout of the next RPC. A deadline already past still sends (with 1 ms), so that gRPC itself reports
    DEADLINE_EXCEEDED."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def retry_pause(policy: RetryPolicy, error: ClientError, attempt: int, deadline: float | None) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when `error` must be raised now.

    Only UNAVAILABLE is retried (the server did not run the request); never once the attempts are spent or when
    the wait would outlive the call's deadline.
    """
    if not isinstance(error, Unavailable) or attempt + 1 >= policy.max_attempts:
        return None
    pause = policy.backoff_s(attempt)
    if deadline is not None and time.monotonic() + pause >= deadline:
        return None
    log.info("%s; retry %d of %d in %.3f s", error, attempt + 1, policy.max_attempts - 1, pause)
    return pause

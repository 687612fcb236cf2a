"""The deadline and retry arithmetic both clients share (cnnserve.client.deadlines): only UNAVAILABLE is retried,
never past the attempts or the call's deadline, and a deadline already past still sends so gRPC reports it."""

from __future__ import annotations

import time

from cnnserve.client import errors as E
from cnnserve.client.config import ClientConfig, RetryPolicy
from cnnserve.client.deadlines import deadline_of, remaining, retry_pause

POLICY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


def test_only_unavailable_is_retried_and_only_while_attempts_remain() -> None:
    unavailable = E.Unavailable("down")
    assert 0 <= retry_pause(POLICY, unavailable, 0, None) <= 0.01  # type: ignore[operator]
    assert 0 <= retry_pause(POLICY, unavailable, 1, None) <= 0.02  # type: ignore[operator]
    assert retry_pause(POLICY, unavailable, 2, None) is None  # the third attempt was the last
    for error in (E.DeadlineExceeded("late"), E.InvalidArgument("bad"), E.Internal("boom")):
        assert retry_pause(POLICY, error, 0, None) is None


def test_no_retry_outlives_the_calls_deadline() -> None:
    slow = RetryPolicy(max_attempts=5, initial_backoff_s=10.0, max_backoff_s=10.0)
    pauses = {retry_pause(slow, E.Unavailable("down"), 0, time.monotonic() + 0.5) for _ in range(50)}
    assert None in pauses and all(p is None or p < 0.5 for p in pauses)


def test_a_calls_deadline_comes_from_its_timeout_or_the_configs() -> None:
    config = ClientConfig(timeout_s=30.0)
    now = time.monotonic()
    assert 29.9 < deadline_of(None, config) - now <= 30.1  # type: ignore[operator]
    assert 1.9 < deadline_of(2.0, config) - now <= 2.1  # type: ignore[operator]
    assert deadline_of(None, ClientConfig(timeout_s=None)) is None
    assert remaining(None) is None
    assert remaining(time.monotonic() - 5) == 0.001  # past: still sent, so gRPC itself says DEADLINE_EXCEEDED

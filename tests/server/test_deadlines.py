"""deadline_of: the earlier of the gRPC deadline and the OIP `timeout` parameter, as time.monotonic() seconds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cnnserve.server.deadlines import deadline_of
from cnnserve.server.errors import InvalidInputError


class Remaining:
    """What deadline_of reads of a grpc.aio.ServicerContext: the seconds left of the call's deadline, or None."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def time_remaining(self) -> float | None:
        return self.seconds


def context(seconds: float | None) -> Any:
    return Remaining(seconds)


def test_no_deadline_and_no_timeout_means_no_limit() -> None:
    assert deadline_of(context(None)) is None
    assert deadline_of(context(None), 0) is None  # timeout 0: none


def test_the_earlier_of_the_grpc_deadline_and_the_timeout_wins() -> None:
    before = time.monotonic()
    grpc_only = deadline_of(context(2.0))
    timeout_only = deadline_of(context(None), 500_000)  # microseconds
    both = deadline_of(context(2.0), 500_000)
    after = time.monotonic()
    assert grpc_only is not None and before + 2.0 <= grpc_only <= after + 2.0
    assert timeout_only is not None and before + 0.5 <= timeout_only <= after + 0.5
    assert both is not None and before + 0.5 <= both <= after + 0.5
    late_timeout = deadline_of(context(0.1), 5_000_000)
    assert late_timeout is not None and late_timeout <= time.monotonic() + 0.1


def test_a_negative_timeout_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="parameter `timeout` is -1; expected microseconds >= 0"):
        deadline_of(context(None), -1)

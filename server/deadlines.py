"""When a request must have left the queue: the gRPC deadline and the Open Inference Protocol `timeout`, as one
absolute time.monotonic() instant the batcher compares against."""

from __future__ import annotations

import time

import grpc

from cnnserve.server.errors import InvalidInputError


def deadline_of(context: grpc.aio.ServicerContext, timeout_us: int | None = None) -> float | None:
    """Absolute time.monotonic() seconds by which a request must have left the queue, or None for no limit.

    The earlier of the gRPC deadline and `timeout_us` (the OIP `timeout` parameter, microseconds; 0 = none).
    """
    now = time.monotonic()
    candidates = []
    remaining = context.time_remaining()
    if remaining is not None:
        candidates.append(now + remaining)
    if timeout_us is not None:
        if timeout_us < 0:
            raise InvalidInputError(f"parameter `timeout` is {timeout_us}; expected microseconds >= 0 (0 = none)")
        if timeout_us > 0:
            candidates.append(now + timeout_us / 1e6)
    return min(candidates) if candidates else None

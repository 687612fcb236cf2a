"""ClientConfig and RetryPolicy: validated at construction, backoff jittered and capped (cnnserve.client.config)."""

from __future__ import annotations

import random

import pytest

from cnnserve.client.config import ClientConfig, RetryPolicy
from cnnserve.errors import ConfigError


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(0)
    for retry in range(9):
        waits = [policy.backoff_s(retry, rng) for _ in range(200)]
        cap = min(1.0, 0.1 * 2**retry)
        assert min(waits) >= 0 and max(waits) <= cap
        assert max(waits) > 0.8 * cap and len(set(waits)) == 200  # spread over the whole range: jitter
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        ClientConfig(timeout_s=0)
    with pytest.raises(ConfigError, match="lowercase"):
        ClientConfig(metadata=(("Authorization", "Bearer x"),))

"""ModelStats and Recorded: what one request and one batch add to a version's counters, and the Triton failure
reason each error counts under."""

from __future__ import annotations

import asyncio

import pytest

from cnnserve.server.errors import (
    DeadlineExceededError,
    DrainingError,
    InferenceError,
    InvalidInputError,
    QueueFullError,
)
from cnnserve.server.stats import BACKEND, CANCELED, OTHER, REJECTED, TIMEOUT, ModelStats, Recorded, failure_reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (QueueFullError("full"), REJECTED),
        (DrainingError("draining"), REJECTED),
        (DeadlineExceededError("late"), TIMEOUT),
        (asyncio.CancelledError(), CANCELED),
        (InferenceError("onnxruntime failed"), BACKEND),
        (InvalidInputError("bad shape"), OTHER),
        (KeyError("a bug"), OTHER),
    ],
)
def test_each_error_counts_under_its_triton_reason(error: BaseException, reason: str) -> None:
    assert failure_reason(error) == reason


def test_recorded_counts_a_success_and_a_failure_with_its_reason() -> None:
    stats = ModelStats()
    with Recorded(stats):
        assert stats.active == 1
    with pytest.raises(QueueFullError), Recorded(stats):
        raise QueueFullError("full")
    assert stats.active == 0
    assert stats.success.count == 1 and stats.fail.count == 1
    assert stats.failures[REJECTED] == 1 and stats.failures[OTHER] == 0
    assert stats.success.ns > 0 and stats.inference_count == 0  # requests are not inferences until a batch runs


def test_a_batch_adds_its_images_and_its_durations() -> None:
    stats = ModelStats()
    stats.record_batch(8, 3, 3000, 100, 2000, 50)
    stats.record_batch(8, 2, 1000, 100, 2000, 50)
    assert stats.inference_count == 16 and stats.execution_count == 2
    assert stats.batches[8].count == 2
    assert stats.queue.count == 5 and stats.queue.ns == 4000
    assert stats.compute_infer.ns == 2000 * 5 and stats.batches[8].compute_infer.ns == 4000  # per request, per batch
    assert stats.last_inference_ms > 0

"""ModelStats: per model version counters, named after Triton's ModelStatistics so both the Open Inference Protocol
statistics and the Prometheus metrics read them directly.

The counters are plain integers updated on the event-loop thread only (the batcher records a batch in the
callback that delivers it), so the hot path takes no lock and creates no metric objects; Prometheus reads them
at scrape time (cnnserve.server.metrics). `Recorded` times one whole request into them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from cnnserve.server.errors import DeadlineExceededError, DrainingError, InferenceError, QueueFullError

#: Failure reasons, as in Triton's nv_inference_request_failure{reason}.
REJECTED = "REJECTED"  # refused before queueing: queue full, draining
CANCELED = "CANCELED"  # the client cancelled while queued
TIMEOUT = "TIMEOUT"  # the deadline passed while queued
BACKEND = "BACKEND"  # onnxruntime failed
OTHER = "OTHER"  # invalid input and anything else
FAILURE_REASONS = (REJECTED, CANCELED, TIMEOUT, BACKEND, OTHER)


class Duration:
    """A (count, total nanoseconds) pair: Triton's StatisticDuration."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count = 0
        self.ns = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStats:
    """What Triton reports per batch size: one execution of that size, and its compute durations."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration

    @property
    def count(self) -> int:
        return self.compute_infer.count


class ModelStats:
    """Cumulative statistics of one model version since the server started."""

    __slots__ = (
        "active",
        "batches",
        "compute_infer",
        "compute_input",
        "compute_output",
        "dropped",
        "execution_count",
        "fail",
        "failures",
        "inference_count",
        "last_inference_ms",
        "pending",
        "queue",
        "success",
    )

    def __init__(self) -> None:
        self.inference_count = 0  # images run (rows), Triton's inference_count
        self.execution_count = 0  # session runs (batches)
        self.last_inference_ms = 0  # wall clock (ms since the epoch) of the last batch; 0 = never
        self.success = Duration()  # whole requests, recorded by the services: end-to-end duration
        self.fail = Duration()
        self.failures: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        # Per queued request (a split request counts once per part): time in the queue and the compute time of
        # the batch it ran in (Triton attributes a batch's compute time to every request in it).
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, BatchStats] = {}  # batch size -> stats
        self.dropped: dict[str, int] = {CANCELED: 0, TIMEOUT: 0}  # requests removed from the queue unrun
        self.pending = 0  # requests queued or running now
        self.active = 0  # requests inside a service handler now (an unloaded version waits for them to end)

    def record_request(self, ok: bool, duration_ns: int, reason: str | None = None) -> None:
        """One whole request as the client saw it (services call this; `reason` only for failures)."""
        if ok:
            self.success.add(duration_ns)
        else:
            self.fail.add(duration_ns)
            key = reason if reason in self.failures else OTHER
            self.failures[key] += 1

    def record_batch(
        self, batch_size: int, requests: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One session run of `batch_size` images made of `requests` requests whose queue times sum to queue_ns."""
        self.inference_count += batch_size
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.queue.add(queue_ns, requests)
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        stats = self.batches.get(batch_size)
        if stats is None:
            stats = self.batches[batch_size] = BatchStats(batch_size, Duration(), Duration(), Duration())
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)


def failure_reason(error: BaseException) -> str:
    """The Triton failure reason for an exception a request ended with (services pass it to record_request)."""
    if isinstance(error, QueueFullError | DrainingError):
        return REJECTED
    if isinstance(error, DeadlineExceededError):
        return TIMEOUT
    if isinstance(error, asyncio.CancelledError):
        return CANCELED
    if isinstance(error, InferenceError):
        return BACKEND
    return OTHER


class Recorded:
    """Record one whole request (success or failure with its Triton reason, and its duration) in `stats`.

    A class rather than @contextlib.contextmanager: it wraps every request, and a generator costs several times more.
    """

    __slots__ = ("_start", "_stats")

    def __init__(self, stats: ModelStats) -> None:
        self._stats = stats
        self._start = 0

    def __enter__(self) -> None:
        self._start = time.perf_counter_ns()
        self._stats.active += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        duration_ns = time.perf_counter_ns() - self._start
        self._stats.active -= 1
        if error is None:
            self._stats.record_request(True, duration_ns)
        else:
            self._stats.record_request(False, duration_ns, failure_reason(error))

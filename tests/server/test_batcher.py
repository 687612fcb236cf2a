"""Batcher: real onnxruntime sessions behind a real asyncio queue; every caller must get exactly its own rows."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cnnserve.server.batcher import Batcher
from cnnserve.server.errors import DeadlineExceededError, DrainingError, InferenceError, QueueFullError
from cnnserve.server.runtime import ModelRuntime
from cnnserve.server.stats import CANCELED, TIMEOUT, ModelStats

MakeImages = Callable[..., np.ndarray]


class CountingRuntime(ModelRuntime):
    """The real runtime, plus how many runs overlapped and an optional pause inside each run (seconds)."""

    pause_s = 0.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self.running = self.most_running = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(self.pause_s)
            return super().run(batch)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def runtime(linear_repository: Path) -> CountingRuntime:
    return CountingRuntime(
        linear_repository / "linear" / "1" / "model.onnx",
        device="cpu",
        allow_cpu_fallback=False,
        intra_op_threads=1,
        max_batch_size=64,
    )


def make_batcher(runtime: ModelRuntime, **overrides: object) -> Batcher:
    options: dict[str, object] = {
        "label": "model linear version 1",
        "max_batch_size": 64,
        "max_queue_delay_us": 2000,
        "max_queue_size": 1024,
        "instances": 2,
        "eager_dispatch": True,
        **overrides,
    }
    return Batcher(runtime, ModelStats(), **options)  # type: ignore[arg-type]


def direct(runtime: ModelRuntime, pixels: np.ndarray) -> np.ndarray:
    return runtime.session.run(None, {"input": pixels})[0]


def test_64_concurrent_requests_each_get_their_own_rows_in_batches(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    batcher = make_batcher(runtime, max_batch_size=16)
    # Requests of 1 to 3 images, 64 of them concurrently.
    sizes = [1 + i % 3 for i in range(64)]
    starts = np.cumsum([0, *sizes])
    pixels = make_images(int(starts[-1]))

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.infer(pixels[a:b]) for a, b in itertools.pairwise(starts)))

    answers = asyncio.run(main())
    expected = direct(runtime, pixels)
    for a, b, answer in zip(starts[:-1], starts[1:], answers, strict=True):
        np.testing.assert_allclose(answer, expected[a:b], rtol=1e-5, atol=1e-4)
    stats = batcher.stats
    assert stats.inference_count == len(pixels)
    assert max(stats.batches) > 1 and max(stats.batches) <= 16
    assert stats.execution_count < 64 and stats.pending == 0
    batcher.close()


def test_a_request_larger_than_the_maximum_is_split_and_reassembled(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    batcher = make_batcher(runtime, max_batch_size=8)
    pixels = make_images(30)
    answer = asyncio.run(batcher.infer(pixels))
    np.testing.assert_allclose(answer, direct(runtime, pixels), rtol=1e-5, atol=1e-4)
    assert sorted(batcher.stats.batches) == [6, 8]  # 8 + 8 + 8 + 6
    assert batcher.stats.batches[8].count == 3
    batcher.close()


def test_a_full_queue_answers_at_once_with_its_size(runtime: CountingRuntime, make_images: MakeImages) -> None:
    batcher = make_batcher(runtime, max_queue_size=4, eager_dispatch=False, max_queue_delay_us=5_000_000)
    pixels = make_images(1)

    async def main() -> float:
        waiting = [asyncio.ensure_future(batcher.infer(pixels)) for _ in range(4)]
        await asyncio.sleep(0)  # let the four enqueue
        started = time.perf_counter()
        with pytest.raises(QueueFullError, match=r"is full \(4 requests waiting, the --max-queue-size\)"):
            await batcher.infer(pixels)
        elapsed = time.perf_counter() - started
        for task in waiting:
            task.cancel()
        return elapsed

    assert asyncio.run(main()) < 0.05
    batcher.close()


def test_a_request_whose_deadline_passes_in_the_queue_never_runs(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    batcher = make_batcher(runtime, eager_dispatch=False, max_queue_delay_us=200_000)
    pixels = make_images(3)

    async def main() -> np.ndarray:
        doomed = batcher.infer(pixels[:2], deadline=time.monotonic() + 0.02)
        patient = batcher.infer(pixels[2:])
        results = await asyncio.gather(doomed, patient, return_exceptions=True)
        assert isinstance(results[0], DeadlineExceededError)
        assert "deadline passed after" in str(results[0]) and "it was not run" in str(results[0])
        return results[1]  # type: ignore[return-value]

    np.testing.assert_allclose(asyncio.run(main()), direct(runtime, pixels[2:]), rtol=1e-5, atol=1e-4)
    # Only the patient request's one row was executed.
    assert batcher.stats.inference_count == 1 and batcher.stats.dropped[TIMEOUT] == 1
    batcher.close()


def test_a_request_cancelled_while_queued_never_runs(runtime: CountingRuntime, make_images: MakeImages) -> None:
    batcher = make_batcher(runtime, eager_dispatch=False, max_queue_delay_us=50_000)
    pixels = make_images(2)

    async def main() -> None:
        cancelled = asyncio.ensure_future(batcher.infer(pixels[:1]))
        kept = asyncio.ensure_future(batcher.infer(pixels[1:]))
        await asyncio.sleep(0.005)
        cancelled.cancel()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(main())
    assert batcher.stats.inference_count == 1 and batcher.stats.dropped[CANCELED] == 1
    assert batcher.stats.pending == 0
    batcher.close()


def test_eager_dispatch_does_not_make_a_lone_request_wait_for_the_delay(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    pixels = make_images(1)
    for eager, check in ((True, lambda s: s < 0.2), (False, lambda s: s >= 0.25)):
        batcher = make_batcher(runtime, eager_dispatch=eager, max_queue_delay_us=250_000)

        async def timed(batcher: Batcher = batcher) -> float:
            started = time.monotonic()
            await batcher.infer(pixels)
            return time.monotonic() - started

        assert check(asyncio.run(timed())), f"eager_dispatch={eager}"
        batcher.close()


def test_instances_bound_the_batches_running_at_once(runtime: CountingRuntime, make_images: MakeImages) -> None:
    runtime.pause_s = 0.02
    batcher = make_batcher(runtime, instances=2, max_batch_size=2)
    pixels = make_images(12)

    async def main() -> None:
        await asyncio.gather(*(batcher.infer(pixels[i : i + 1]) for i in range(12)))

    asyncio.run(main())
    assert runtime.most_running == 2
    batcher.close()


def test_draining_refuses_new_requests(runtime: CountingRuntime, make_images: MakeImages) -> None:
    batcher = make_batcher(runtime)
    batcher.draining = True
    with pytest.raises(DrainingError, match="is shutting down and accepts no new requests"):
        asyncio.run(batcher.infer(make_images(1)))
    batcher.close()


def test_tiny_batches_run_on_the_event_loop_only_when_nothing_else_runs(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    threads: list[str] = []
    original = runtime.run

    def run(batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return original(batch)

    runtime.run = run  # type: ignore[method-assign]
    pixels = make_images(8)
    assert runtime.sizes_within((1, 28, 28), np.dtype(np.uint8), budget_us=1_000_000) == 64
    assert runtime.sizes_within((1, 28, 28), np.dtype(np.uint8), budget_us=0) == 0
    for inline_images, expect_loop_thread in ((1, True), (0, False)):
        threads.clear()
        batcher = make_batcher(runtime, inline_images=inline_images)

        async def lone(batcher: Batcher = batcher) -> tuple[np.ndarray, str]:
            return await batcher.infer(pixels[:1]), threading.current_thread().name

        answer, loop_thread = asyncio.run(lone())
        np.testing.assert_allclose(answer, direct(runtime, pixels[:1]), rtol=1e-5, atol=1e-4)
        assert (threads == [loop_thread]) is expect_loop_thread, threads
        batcher.close()
    # Larger than inline_images: an instance thread runs it even when idle.
    threads.clear()
    batcher = make_batcher(runtime, inline_images=1)
    asyncio.run(batcher.infer(pixels))
    assert threads and all(name.startswith("ort-") for name in threads)
    batcher.close()


def test_drained_returns_when_the_last_queued_request_is_answered(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    runtime.pause_s = 0.05
    batcher = make_batcher(runtime, max_queue_delay_us=0, instances=1)

    async def main() -> tuple[bool, int]:
        requests = [asyncio.ensure_future(batcher.infer(make_images(1, seed=i))) for i in range(3)]
        await asyncio.sleep(0)  # all three queued
        batcher.draining = True
        await asyncio.wait_for(batcher.drained(), 10)
        return all(request.done() for request in requests), batcher.stats.pending

    answered, pending = asyncio.run(main())
    assert answered and pending == 0
    asyncio.run(batcher.drained())  # nothing pending: returns at once
    batcher.close()


def test_a_failing_batch_reaches_its_callers_and_the_instance_threads_serve_on(
    runtime: CountingRuntime, make_images: MakeImages
) -> None:
    batcher = make_batcher(runtime, instances=1, inline_images=0)  # every batch on the one instance thread
    original = runtime.run
    ran_on: list[threading.Thread] = []

    def run(batch: np.ndarray) -> np.ndarray:  # the first batch fails, as a real onnxruntime error would
        ran_on.append(threading.current_thread())
        if len(ran_on) == 1:
            raise RuntimeError("onnxruntime failed")
        return original(batch)

    runtime.run = run  # type: ignore[method-assign]
    pixels = make_images(2)

    async def main() -> np.ndarray:
        with pytest.raises(InferenceError, match=r"inference failed on a batch of 1 image\(s\) of model linear"):
            await batcher.infer(pixels[:1])
        return await batcher.infer(pixels)

    np.testing.assert_allclose(asyncio.run(main()), direct(runtime, pixels), rtol=1e-5, atol=1e-4)
    assert batcher.stats.pending == 0
    assert len(set(ran_on)) == 1 and ran_on[0] is not threading.main_thread()  # the one instance thread, twice
    batcher.close()
    assert not ran_on[0].is_alive()

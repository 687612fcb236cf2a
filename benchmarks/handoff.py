"""The batch hand-off: what the event loop pays to send one batch to an onnxruntime thread and to get it back.

No model runs here (the runtime answers zeros at once), so the figures are the dispatcher's own work per batch:
queueing, forming the batch, the trip to an instance thread and back, and handing each caller its rows. Beside
the Batcher, the two bare round trips it could be built on, each with no batching at all:
- `run_in_executor`: a ThreadPoolExecutor, whose concurrent future is chained to an asyncio future (two futures
  and two loop callbacks per trip);
- `SimpleQueue`: threads that take work from a queue.SimpleQueue and answer with one call_soon_threadsafe, which
  is what the Batcher does.
`--callers` tasks each send requests of `--images` images, as many as a batch holds (the server's default
--max-batch-size, 64): one request per batch, as under perf_analyzer's 8 x 64. Each row is the median of
`--repeats` interleaved runs, on the server's event loop (uvloop when installed) and its `--instances` default.

    .venv/bin/python benchmarks/handoff.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import SimpleQueue

import numpy as np

from cnnserve.server.app import new_event_loop
from cnnserve.server.batcher import Batcher
from cnnserve.server.config import available_cores
from cnnserve.server.stats import ModelStats

Trip = Callable[[], Awaitable[object]]


class AnswersZeros:
    """The two methods of ModelRuntime the Batcher calls, with no model behind them."""

    def __init__(self, classes: int = 10) -> None:
        self._zeros = np.zeros((1024, classes), np.float32)

    def assemble(self, parts: Sequence[np.ndarray], n: int) -> np.ndarray:
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._zeros[: len(batch)]


@dataclass(frozen=True, slots=True)
class Measured:
    trips_per_s: float
    loop_us: float  # event-loop thread CPU per trip
    process_us: float  # every thread's CPU per trip


async def _measure(trip: Trip, callers: int, seconds: float) -> Measured:
    stop = time.perf_counter() + seconds
    done = 0

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await trip()
            done += 1

    loop_cpu, process_cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    loop_cpu, process_cpu = time.thread_time() - loop_cpu, time.process_time() - process_cpu
    wall = time.perf_counter() - wall
    return Measured(done / wall, loop_cpu / done * 1e6, process_cpu / done * 1e6)


class SimpleQueuePool:
    """Threads that run a function taken from a SimpleQueue and answer on the loop with one callback."""

    def __init__(self, threads: int) -> None:
        self._work: SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[object]] | None] = SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            loop, future = item
            loop.call_soon_threadsafe(future.set_result, None)

    def trip(self) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._work.put((loop, future))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()


def run(args: argparse.Namespace) -> str:
    instances = available_cores() + 1  # the server's --instances 0
    pixels = np.zeros((args.images, 1, 28, 28), np.uint8)
    batcher = Batcher(
        AnswersZeros(),  # type: ignore[arg-type]
        ModelStats(),
        label="model none version 1",
        max_batch_size=args.images,
        max_queue_delay_us=2000,
        max_queue_size=1024,
        instances=instances,
    )
    executor = ThreadPoolExecutor(max_workers=instances)
    pool = SimpleQueuePool(instances)

    def in_executor() -> Awaitable[object]:
        return asyncio.get_running_loop().run_in_executor(executor, int)

    trips: dict[str, Trip] = {
        "Batcher (cnnserve)": lambda: batcher.infer(pixels),
        "run_in_executor, bare": in_executor,
        "SimpleQueue + call_soon_threadsafe, bare": pool.trip,
    }
    runs: dict[str, list[Measured]] = {name: [] for name in trips}
    loop = new_event_loop()
    try:
        for trip in trips.values():  # warm every path once
            loop.run_until_complete(_measure(trip, args.callers, 0.2))
        for _ in range(args.repeats):
            for name, trip in trips.items():
                runs[name].append(loop.run_until_complete(_measure(trip, args.callers, args.seconds)))
    finally:
        loop.close()
        batcher.close()
        executor.shutdown()
        pool.close()
    lines = [
        f"{args.callers} callers x {args.images} images per request, {instances} threads, {type(loop).__module__} "
        f"event loop, median of {args.repeats}",
        "",
        "| hand-off | trips/s | event-loop CPU-us per trip | process CPU-us per trip |",
        "|---|---|---|---|",
    ]
    for name, measured in runs.items():
        loop_us = statistics.median(m.loop_us for m in measured)
        process_us = statistics.median(m.process_us for m in measured)
        trips_per_s = statistics.median(m.trips_per_s for m in measured)
        lines.append(f"| {name} | {trips_per_s:,.0f} | {loop_us:.1f} | {process_us:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers (tasks on one event loop)")
    parser.add_argument("--images", type=int, default=64, help="images per request, and the batch size")
    parser.add_argument("--seconds", type=float, default=1.5, help="measured seconds per run")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per hand-off (the median is shown)")
    print(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

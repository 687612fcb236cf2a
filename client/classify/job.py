"""The batch CLI's streaming job: batches of paths to a thread pool, at most `window` in flight, written in order.

Memory is bounded by the window: paths are drawn from a generator only when a slot is free, each worker reads
its own batch's files, and results wait in a FIFO of futures (the reorder buffer) until every earlier batch is
written, which happens as soon as they are done. Ctrl-C writes the batches already done at the head of the FIFO
and drops the rest.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cnnserve.client.classify.output import Row
from cnnserve.client.errors import ClientError, Unavailable
from cnnserve.client.results import Classification

log = logging.getLogger(__name__)

Classify = Callable[[list[str]], list[Classification]]


class Progress(Protocol):
    def update(self, n: int) -> object: ...


@dataclass(frozen=True, slots=True)
class Summary:
    written: int  # rows written in this run
    failed: int  # of which rows with an error
    wall_s: float
    interrupted: bool = False  # Ctrl-C
    stopped: str = ""  # why the job stopped early (the server went away), "" when it ran to the end

    @property
    def images_per_s(self) -> float:
        return self.written / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        rate = f"{self.images_per_s:,.1f} images/s"
        images = f"{self.written} image{'' if self.written == 1 else 's'}"
        text = f"{images}, {self.failed} failed, {self.wall_s:.2f} s, {rate}"
        if self.interrupted:
            text += "; interrupted: rerun with --resume to finish"
        elif self.stopped:
            text += f"; stopped: {self.stopped}; rerun with --resume to finish"
        return text


class _ServerLost(Exception):
    """A batch failed with UNAVAILABLE after every retry: the job stops instead of failing every input."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(str(error))
        self.error = error


def _rows(classify: Classify, paths: list[str]) -> list[Row]:
    """Rows of one batch; a failed call gives each of its inputs a row with the error (Unavailable stops)."""
    try:
        return [Row.of(result) for result in classify(paths)]
    except Unavailable as exc:
        raise _ServerLost(exc) from exc
    except ClientError as exc:
        error = f"{exc.code}: {exc.details}"
        return [Row.failed(path, error) for path in paths]


class _ReadFailed:
    """The input reader's exception, carried to the main thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()  # the reader's last event: no more batches


def run(
    batches: Iterator[list[str]],
    classify: Classify,
    sink: Callable[[list[Row]], None],
    *,
    concurrency: int,
    progress: Progress | None = None,
) -> Summary:
    """Classify every batch with `concurrency` workers and hand the rows to `sink` in input order.

    A batch's rows are written as soon as it and every batch before it are done, not when the next input arrives:
    inputs may come slowly (a pipe, a FIFO). A daemon thread reads the inputs, so that a read blocked on a pipe
    neither delays the rows nor keeps the process alive after Ctrl-C; the main thread submits and writes.
    """
    window = 2 * concurrency  # batches read but not yet written: keeps every worker busy while the head is written
    events: queue.SimpleQueue[object] = queue.SimpleQueue()  # a batch, _END, _ReadFailed, or None (a batch finished)
    slots = threading.Semaphore(window)
    stop = threading.Event()
    pending: deque[Future[list[Row]]] = deque()
    written = failed = 0
    start = time.perf_counter()

    def read() -> None:
        try:
            while slots.acquire() and not stop.is_set():  # a free slot first: never read more than the window
                batch = next(batches, None)
                if batch is None:
                    break
                events.put(batch)
        except Exception as exc:
            events.put(_ReadFailed(exc))
            return
        events.put(_END)

    def write_done() -> None:
        """Write the finished batches at the head of the queue, in order."""
        nonlocal written, failed
        while pending and pending[0].done():
            rows = pending.popleft().result()
            slots.release()
            sink(rows)
            written += len(rows)
            failed += sum(1 for row in rows if row.error)
            if progress is not None:
                progress.update(len(rows))

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="classify")
    threading.Thread(target=read, daemon=True, name="classify-inputs").start()
    interrupted, stopped, exhausted = False, "", False
    try:
        while not exhausted or pending:
            event = events.get()
            if event is _END:
                exhausted = True
            elif isinstance(event, _ReadFailed):
                raise event.error
            elif isinstance(event, list):
                future = pool.submit(_rows, classify, event)
                future.add_done_callback(lambda _: events.put(None))
                pending.append(future)
            write_done()
    except KeyboardInterrupt:
        interrupted = True
        # Write the batches already finished at the head of the queue (order kept); the rest are dropped.
        with contextlib.suppress(_ServerLost):
            write_done()
    except _ServerLost as exc:
        stopped = str(exc.error)
    finally:
        stop.set()
        for _ in range(window):
            slots.release()  # a reader waiting for a slot wakes, sees `stop` and ends
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return Summary(written, failed, time.perf_counter() - start, interrupted, stopped)

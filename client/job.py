"""The batch CLI's streaming job: batches of paths to a thread pool, at most `window` in flight, written in order.

Memory is bounded by the window: paths are drawn from a generator only when a slot is free, each worker reads
its own batch's files, and results wait in a FIFO of futures (the reorder buffer) until every earlier batch is
written. Ctrl-C writes the batches already done at the head of the FIFO and drops the rest.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from cnnserve.client.errors import ClientError, Unavailable
from cnnserve.client.output import Row
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
        text = f"{self.written} images, {self.failed} failed, {self.wall_s:.2f} s, {rate}"
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
        error = f"{exc.code or exc.status}: {exc.details}"
        return [Row.failed(path, error) for path in paths]


def run(
    batches: Iterator[list[str]],
    classify: Classify,
    sink: Callable[[list[Row]], None],
    *,
    concurrency: int,
    progress: Progress | None = None,
) -> Summary:
    """Classify every batch with `concurrency` workers and hand the rows to `sink` in input order."""
    window = 2 * concurrency  # batches in flight: enough to keep every worker busy while the head is written
    pending: deque[Future[list[Row]]] = deque()
    written = failed = 0
    start = time.perf_counter()

    def drain(keep: int) -> None:
        """Write finished batches from the head, waiting on the head while more than `keep` are in flight."""
        nonlocal written, failed
        while pending and (len(pending) > keep or pending[0].done()):
            rows = pending.popleft().result()
            sink(rows)
            written += len(rows)
            failed += sum(1 for row in rows if row.error)
            if progress is not None:
                progress.update(len(rows))

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="classify")
    interrupted, stopped = False, ""
    try:
        for batch in batches:
            pending.append(pool.submit(_rows, classify, batch))
            drain(keep=window - 1)
        drain(keep=0)
    except KeyboardInterrupt:
        interrupted = True
        # Write the batches already finished at the head of the queue (order kept); the rest are dropped.
        with contextlib.suppress(_ServerLost):
            drain(keep=len(pending))
    except _ServerLost as exc:
        stopped = str(exc.error)
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return Summary(written, failed, time.perf_counter() - start, interrupted, stopped)

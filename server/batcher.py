"""Batcher: the dynamic batcher of one model version, an asyncio queue in front of a ModelRuntime.

Requests queue until `max_batch_size` images are waiting or the first has waited `max_queue_delay_us`; then one
batch runs on one of `instances` threads (so that many batches run at once; onnxruntime releases the GIL) and
each caller gets a view of exactly its rows of the output. With eager dispatch (the default) the wait also ends
when an instance is idle and no request arrived during the last event-loop turn: a lone client is not delayed,
while under load requests pile up behind the running batches and batches grow by themselves.
A batch so small that its measured run time is below `inline_run_us` runs on the event loop itself when no other
batch is running: two thread hand-offs cost more than such a run.

Hot path, so: no task or thread per request, no lock (all state lives on the event-loop thread; the instance
threads only run `_execute`), no logging per request, and one copy per batch (np.concatenate; none for a lone
request). A batch crosses to its thread through a SimpleQueue and comes back in one call_soon_threadsafe, not
through run_in_executor, whose two chained futures cost the event loop about 25 us more per batch (benchmarks/
RESULTS.md, "The batch hand-off").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from queue import SimpleQueue

import numpy as np

from cnnserve.server.errors import DeadlineExceededError, DrainingError, InferenceError, QueueFullError
from cnnserve.server.faults import FAULTS
from cnnserve.server.runtime import ModelRuntime
from cnnserve.server.stats import CANCELED, TIMEOUT, ModelStats

# (logits (n, classes), assemble ns, run ns) as computed on an instance thread
_Executed = tuple[np.ndarray, int, int]


class _Request:
    """One queued piece of work: k images and the future its caller awaits."""

    __slots__ = ("deadline", "future", "n", "pixels", "queued_ns")

    def __init__(
        self, pixels: np.ndarray, future: asyncio.Future[np.ndarray], deadline: float | None, queued_ns: int
    ) -> None:
        self.pixels = pixels  # (k, C, H, W)
        self.n = len(pixels)
        self.future = future
        self.deadline = deadline  # absolute time.monotonic() seconds, or None
        self.queued_ns = queued_ns  # time.monotonic_ns() at enqueue


class _Job:
    """One batch on its way to an instance thread, and back to the event loop it came from."""

    __slots__ = ("images", "loop", "parts", "queue_ns", "requests")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        requests: list[_Request],
        parts: list[np.ndarray],
        images: int,
        queue_ns: int,
    ) -> None:
        self.loop = loop
        self.requests = requests
        self.parts = parts
        self.images = images
        self.queue_ns = queue_ns  # the requests' summed time in the queue


class Batcher:
    """The queue, dispatcher and instance threads of one model version. Use it from one event loop at a time."""

    def __init__(
        self,
        runtime: ModelRuntime,
        stats: ModelStats,
        *,
        label: str,
        max_batch_size: int,
        max_queue_delay_us: int,
        max_queue_size: int,
        instances: int,
        eager_dispatch: bool = True,
        inline_images: int = 0,
        max_queue_bytes: int = 2**62,
        on_batch: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.stats = stats
        self.label = label  # "model version N", for messages
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.on_batch = on_batch  # told of each batch's outcome: None for success, else the error (health)
        self.instances = instances
        self.draining = False
        self._delay_ns = max_queue_delay_us * 1000
        self._eager = eager_dispatch
        self.inline_images = inline_images  # batches up to this size run on the loop when no batch is running
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()  # batches for the instance threads
        prefix = f"ort-{label.replace(' ', '-')}"
        # Daemons: a Batcher that is never closed (a test's) does not keep the interpreter from exiting.
        self._threads = [
            threading.Thread(target=self._work, name=f"{prefix}-{i}", daemon=True) for i in range(instances)
        ]
        for thread in self._threads:
            thread.start()
        self._queue: deque[_Request] = deque()
        self._queued_images = 0
        self._queued_bytes = 0  # pixel bytes of the waiting requests (their arrays are held until they leave)
        self._inflight = 0  # batches running now
        self._handle: asyncio.Handle | None = None  # the pending _check or _dispatch callback
        self._seen = 0  # queue length when the pending eager _check was scheduled
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None  # set once nothing is pending, while someone awaits drained()

    # --- called by ServedModel.infer, on the event loop ---------------------------------------------------------

    async def infer(self, pixels: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """(N, C, H, W) -> (N, classes); N > max_batch_size is split into parts that may run in different batches."""
        size = self.max_batch_size
        if len(pixels) <= size:
            return await self._enqueue((pixels,), deadline)[0]
        futures = self._enqueue([pixels[i : i + size] for i in range(0, len(pixels), size)], deadline)
        try:
            parts = await asyncio.gather(*futures)
        except BaseException:
            for future in futures:  # one part failed or the caller went away: the rest must not run
                future.cancel()
            raise
        return np.concatenate(parts, axis=0)

    @property
    def queued(self) -> int:
        """Requests waiting (cancelled ones included until the dispatcher drops them)."""
        return len(self._queue)

    async def drained(self) -> None:
        """Return once no request is queued or running (await it after `draining` is set: nothing new arrives)."""
        while self.stats.pending:
            if self._idle is None or self._idle.is_set():
                self._idle = asyncio.Event()
            await self._idle.wait()

    def _wake_if_idle(self) -> None:
        """Called where `pending` falls (per batch, never per request): wakes drained() at zero."""
        if self._idle is not None and not self.stats.pending:
            self._idle.set()

    def close(self) -> None:
        """Stop the instance threads once the batches given to them end (call after the server stopped)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    # --- queueing ---------------------------------------------------------------------------------------------

    def _enqueue(self, parts: Sequence[np.ndarray], deadline: float | None) -> list[asyncio.Future[np.ndarray]]:
        """Queue every part or none (a split request is refused whole), and return their futures."""
        if self.draining:
            raise DrainingError(f"{self.label} is shutting down and accepts no new requests; retry on another server")
        if len(self._queue) + len(parts) > self.max_queue_size:
            raise QueueFullError(
                f"the queue of {self.label} is full ({self.max_queue_size} requests waiting, the --max-queue-size); "
                "retry later"
            )
        size = sum(part.nbytes for part in parts)
        if self._queued_bytes + size > self.max_queue_bytes and self._queue:
            raise QueueFullError(
                f"the queue of {self.label} is full ({self._queued_bytes} bytes of pixels waiting; with this request's "
                f"{size} it would pass --max-queue-bytes {self.max_queue_bytes}); retry later"
            )
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): callbacks on an old loop will never run
            self._loop, self._handle = loop, None
        now = time.monotonic_ns()
        futures = []
        for part in parts:
            future: asyncio.Future[np.ndarray] = loop.create_future()
            self._queue.append(_Request(part, future, deadline, now))
            self._queued_images += len(part)
            self._queued_bytes += part.nbytes
            futures.append(future)
        self.stats.pending += len(parts)
        self._schedule()
        return futures

    def _schedule(self) -> None:
        """Arrange for the next batch to leave: now, after one more loop turn (eager), or when the delay ends."""
        if not self._queue or self._inflight >= self.instances:
            return  # a finishing batch calls us again
        assert self._loop is not None
        full = self._queued_images >= self.max_batch_size
        if self._handle is not None:
            if not (full and isinstance(self._handle, asyncio.TimerHandle)):
                return
            self._handle.cancel()  # the batch filled before its delay ran out: go now
        if full or self._delay_ns == 0:
            self._handle = self._loop.call_soon(self._dispatch)
        elif self._eager:
            self._seen = len(self._queue)
            self._handle = self._loop.call_soon(self._check)
        else:
            self._handle = self._loop.call_at((self._queue[0].queued_ns + self._delay_ns) / 1e9, self._check)

    def _check(self) -> None:
        """Dispatch unless the batch should wait longer: not full, the delay not over, and (eager) still growing."""
        self._handle = None
        if not self._queue or self._inflight >= self.instances:
            return
        assert self._loop is not None
        wait_until_ns = self._queue[0].queued_ns + self._delay_ns
        if self._queued_images < self.max_batch_size and time.monotonic_ns() < wait_until_ns:
            if not self._eager:
                self._handle = self._loop.call_at(wait_until_ns / 1e9, self._check)
                return
            if len(self._queue) != self._seen:  # requests still arriving: give them one more loop turn
                self._seen = len(self._queue)
                self._handle = self._loop.call_soon(self._check)
                return
        self._dispatch()

    def _dispatch(self) -> None:
        """Take up to max_batch_size images from the queue head, dropping cancelled and expired requests, and run
        them as one batch on an instance thread."""
        self._handle = None
        assert self._loop is not None
        queue, stats = self._queue, self.stats
        now_ns = time.monotonic_ns()
        now_s = now_ns / 1e9
        requests: list[_Request] = []
        parts: list[np.ndarray] = []
        images = queue_ns = 0
        while queue:
            request = queue[0]
            if request.future.cancelled():
                queue.popleft()
                self._queued_images -= request.n
                self._queued_bytes -= request.pixels.nbytes
                stats.dropped[CANCELED] += 1
                stats.pending -= 1
                continue
            if request.deadline is not None and request.deadline <= now_s:
                queue.popleft()
                self._queued_images -= request.n
                self._queued_bytes -= request.pixels.nbytes
                stats.dropped[TIMEOUT] += 1
                stats.pending -= 1
                waited_ms = (now_ns - request.queued_ns) / 1e6
                request.future.set_exception(
                    DeadlineExceededError(
                        f"the request's deadline passed after {waited_ms:.1f} ms in the queue of {self.label}; "
                        "it was not run"
                    )
                )
                continue
            if images + request.n > self.max_batch_size:
                break  # the head does not fit: it leads the next batch
            queue.popleft()
            self._queued_images -= request.n
            self._queued_bytes -= request.pixels.nbytes
            requests.append(request)
            parts.append(request.pixels)
            images += request.n
            queue_ns += now_ns - request.queued_ns
        if not requests:
            self._wake_if_idle()  # every request it looked at had been cancelled or had expired
        if requests and self._inflight == 0 and images <= self.inline_images:
            try:  # tiny and nothing else running: cheaper here than two thread hand-offs
                executed: _Executed | BaseException = self._execute(parts, images)
            except Exception as exc:
                executed = exc
            self._deliver(requests, images, queue_ns, executed)
            return
        if requests:
            self._inflight += 1
            self._jobs.put(_Job(self._loop, requests, parts, images, queue_ns))
        self._schedule()

    # --- running and delivering -------------------------------------------------------------------------------

    def _work(self) -> None:
        """An instance thread: run each batch it is given and hand the outcome to the batch's event loop in one
        callback, until close() sends None."""
        while (job := self._jobs.get()) is not None:
            try:
                executed: _Executed | BaseException = self._execute(job.parts, job.images)
            except BaseException as exc:  # as concurrent.futures does: the thread lives on, the callers are told
                executed = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits these requests any more
                job.loop.call_soon_threadsafe(self._finished, job, executed)

    def _execute(self, parts: list[np.ndarray], images: int) -> _Executed:
        """Instance thread (or the event loop, for a tiny batch): the one concatenation and the session run."""
        started = time.perf_counter_ns()
        batch = self.runtime.assemble(parts, images)
        assembled = time.perf_counter_ns()
        logits = self.runtime.run(batch)
        return logits, assembled - started, time.perf_counter_ns() - assembled

    def _finished(self, job: _Job, executed: _Executed | BaseException) -> None:
        """Event loop, when an instance thread finished a batch."""
        self._inflight -= 1
        self._deliver(job.requests, job.images, job.queue_ns, executed)

    def _deliver(
        self, requests: list[_Request], images: int, queue_ns: int, executed: _Executed | BaseException
    ) -> None:
        """Event loop: hand each request its rows (views of the batch output) and record the batch."""
        started = time.perf_counter_ns()
        self.stats.pending -= len(requests)
        if isinstance(executed, BaseException):
            # onnxruntime's text names server internals: it goes to the log, the callers get its reference.
            ref = FAULTS.report(f"a batch of {self.label}", executed, traceback=False)
            failure = InferenceError(
                f"inference failed on a batch of {images} image(s) of {self.label} (server log reference {ref})"
            )
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(failure)
            if self.on_batch is not None:
                self.on_batch(failure)
        else:
            logits, input_ns, infer_ns = executed
            start = 0
            for request in requests:
                end = start + request.n
                if not request.future.done():  # cancelled while running: its rows are simply not wanted
                    request.future.set_result(logits[start:end])
                start = end
            output_ns = time.perf_counter_ns() - started
            self.stats.record_batch(images, len(requests), queue_ns, input_ns, infer_ns, output_ns)
            if self.on_batch is not None:
                self.on_batch(None)
        if self._idle is not None:
            self._wake_if_idle()
        self._schedule()

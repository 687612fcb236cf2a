"""ordered_pipeline: a stream's requests handled several at once (so they share batches), answered in order, and
ended with UNAVAILABLE once the server drains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from cnnserve.server.errors import DrainingError

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def ordered_pipeline(
    requests: AsyncIterable[Req],
    handle: Callable[[Req], Awaitable[Resp]],
    window: int,
    closing: asyncio.Event | None = None,
) -> AsyncIterator[Resp]:
    """Run `handle` on up to `window` stream requests at once and yield their responses in request order.

    Several requests of one stream then share a batch instead of waiting for each other. `handle` must turn its
    own failures into a response (a stream error ends the whole stream). When the caller stops iterating (the
    client cancelled), the requests still running are cancelled. When `closing` is set (the server drains), no
    further request is read; those in flight are answered, then the stream ends with DrainingError (UNAVAILABLE).
    """
    started: asyncio.Queue[asyncio.Task[Resp] | None] = asyncio.Queue()  # started, not yet answered, in order
    slots = asyncio.Semaphore(window)  # taken before a request is read, so cancelling the reader loses none
    failed: list[Exception] = []  # an error of the request stream itself (not of one request)

    async def read() -> None:
        iterator = requests.__aiter__()
        try:
            while True:
                await slots.acquire()
                try:
                    request = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                started.put_nowait(asyncio.ensure_future(handle(request)))
        except Exception as error:
            failed.append(error)
        started.put_nowait(None)  # not reached when cancelled: the consumer is gone, or `close` ends the queue

    reader = asyncio.ensure_future(read())
    closed = False

    def close(_: object) -> None:
        nonlocal closed
        if not reader.done():
            closed = True
            reader.cancel()
            started.put_nowait(None)

    watcher = asyncio.ensure_future(closing.wait()) if closing is not None else None
    if watcher is not None:
        watcher.add_done_callback(close)
    running: list[asyncio.Task[Resp]] = []
    try:
        while (task := await started.get()) is not None:
            running.append(task)
            yield await task
            running.remove(task)
            slots.release()
        if failed:
            raise failed[0]
        if closed:
            raise DrainingError(
                "the server is shutting down: this stream was closed after answering the requests it had read; "
                "send the rest on a new stream (another server)"
            )
    finally:
        if watcher is not None:
            watcher.remove_done_callback(close)
            watcher.cancel()
        reader.cancel()
        while not started.empty():
            leftover = started.get_nowait()
            if leftover is not None:
                running.append(leftover)
        for task in running:
            task.cancel()

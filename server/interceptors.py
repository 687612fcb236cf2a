"""The per-call plumbing every gRPC method shares, written once: error -> status mapping, deadlines, request
accounting and ordered stream pipelining.

`@rpc_servicer` on a servicer class wraps every RPC method (the CamelCase coroutine and async-generator methods)
with the one error mapping: a CnnserveError becomes `grpc.StatusCode[error.status]` with its message, anything
else is logged with its traceback and becomes INTERNAL. No method carries its own try/except for this.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cnnserve.errors import CnnserveError
from cnnserve.server.errors import InvalidInputError
from cnnserve.server.stats import ModelStats, failure_reason

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=type)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message an exception becomes; unknown exceptions are INTERNAL (the caller logs them)."""
    if isinstance(error, CnnserveError):
        return grpc.StatusCode[error.status], str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); the server log has the traceback"


def failure_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """status_of(error), after logging it: with its traceback when it is not a CnnserveError (a bug)."""
    code, message = status_of(error)
    if not isinstance(error, CnnserveError):
        logger.error("%s failed with an unexpected error", method, exc_info=error)
    else:
        logger.debug("%s: %s %s", method, code.name, message)
    return code, message


async def _abort(context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
    await context.abort(*failure_of(error, method))


def _wrap(method: Callable[..., Any], qualname: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in method(self, request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort(context, qualname, error)

        return stream

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, qualname, error)

    return unary


def rpc_servicer(cls: S) -> S:
    """Class decorator: wrap every RPC method (CamelCase, async) of a servicer with the error mapping."""
    for name, member in list(vars(cls).items()):
        if name[:1].isupper() and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)):
            setattr(cls, name, _wrap(member, f"{cls.__name__}.{name}"))
    return cls


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


async def ordered_pipeline(
    requests: AsyncIterable[Req], handle: Callable[[Req], Awaitable[Resp]], window: int
) -> AsyncIterator[Resp]:
    """Run `handle` on up to `window` + 1 stream requests at once and yield their responses in request order.

    Several requests of one stream then share a batch instead of waiting for each other. `handle` must turn its
    own failures into a response (a stream error ends the whole stream). When the caller stops iterating (the
    client cancelled), the requests still running are cancelled.
    """
    # Started requests not yet answered (the one being awaited is out of the queue: hence window + 1 at most).
    started: asyncio.Queue[asyncio.Task[Resp] | None] = asyncio.Queue(maxsize=window)
    failed: list[Exception] = []  # an error of the request stream itself (not of one request)

    async def read() -> None:
        try:
            async for request in requests:
                await started.put(asyncio.ensure_future(handle(request)))
        except Exception as error:
            failed.append(error)
        await started.put(None)  # not reached when cancelled: the consumer is gone then

    reader = asyncio.ensure_future(read())
    running: list[asyncio.Task[Resp]] = []
    try:
        while (task := await started.get()) is not None:
            running.append(task)
            yield await task
            running.remove(task)
        if failed:
            raise failed[0]
    finally:
        reader.cancel()
        while not started.empty():
            leftover = started.get_nowait()
            if leftover is not None:
                running.append(leftover)
        for task in running:
            task.cancel()

"""The per-call plumbing every gRPC method shares, written once: error -> status mapping, deadlines, request
accounting, ordered stream pipelining, and the guard every registered method gets (`guard_server`).

`@rpc_servicer` on a servicer class wraps every RPC method (the CamelCase coroutine and async-generator methods)
with the one error mapping: a CnnserveError becomes `grpc.StatusCode[error.status]` with its message, anything
else is logged (rate-limited, with a reference the client's INTERNAL message quotes). No method carries its own
try/except for this. `guard_server` makes undecodable request bytes INVALID_ARGUMENT (unary and inside streams)
instead of grpc's UNKNOWN with a traceback, and caps the calls served at once (--max-concurrent-rpcs).
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
from cnnserve.server.errors import DrainingError, InvalidInputError, UndecodableRequestError
from cnnserve.server.faults import FAULTS
from cnnserve.server.stats import ModelStats, failure_reason

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=type)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_of(error: BaseException, ref: str = "") -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message an exception becomes; unknown exceptions are INTERNAL (the caller logs them
    under `ref`, which the message quotes: never the exception's own text, which may name server internals)."""
    if isinstance(error, CnnserveError):
        return grpc.StatusCode[error.status], str(error)
    where = f" (server log reference {ref})" if ref else ""
    return grpc.StatusCode.INTERNAL, f"internal error{where}; the server log has the details"


def failure_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """status_of(error), after logging it: a CnnserveError (a client's mistake, an expected refusal) at debug
    level; anything else (a bug) with its traceback, at most once a minute per distinct error."""
    if not isinstance(error, CnnserveError):
        return status_of(error, FAULTS.report(method, error))
    code, message = status_of(error)
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


# --- the guard of every registered method ------------------------------------------------------------------------


class _Undecodable:
    """What the guarded deserializer returns for bytes that do not parse (grpc would answer UNKNOWN and log)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class CallLimit:
    """The calls being served at once, across every guarded method but the probes' (`EXEMPT`)."""

    #: Cheap calls that probes and balancers make: never refused for concurrency.
    EXEMPT = frozenset({"ServerLive", "ServerReady", "ModelReady"})
    EXEMPT_SERVICES = frozenset({"grpc.health.v1.Health"})

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def applies_to(self, method: str) -> bool:
        service, _, name = method.lstrip("/").rpartition("/")
        return service not in self.EXEMPT_SERVICES and name not in self.EXEMPT

    def refusal(self) -> str:
        return (
            f"the server is serving its limit of {self.limit} concurrent calls (--max-concurrent-rpcs); "
            "retry later or on another server"
        )


def guard_server(server: grpc.aio.Server, limit: CallLimit) -> None:
    """Guard every method registered on `server` from now on (call before adding the services)."""
    target: Any = server  # its registration methods are replaced on this one instance
    add_generic = target.add_generic_rpc_handlers
    add_registered = target.add_registered_method_handlers

    def add_generic_rpc_handlers(handlers: Any) -> None:
        add_generic(tuple(_GuardedGeneric(handler, limit) for handler in handlers))

    def add_registered_method_handlers(service: str, handlers: dict[str, Any]) -> None:
        add_registered(service, {name: _guard(h, f"/{service}/{name}", limit) for name, h in handlers.items()})

    target.add_generic_rpc_handlers = add_generic_rpc_handlers
    target.add_registered_method_handlers = add_registered_method_handlers


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, limit: CallLimit) -> None:
        self._inner, self._limit = inner, limit
        self._cache: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        guarded = self._cache.get(method)
        if guarded is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            guarded = self._cache[method] = _guard(handler, method, self._limit)
        return guarded


def _guard(handler: Any, method: str, limit: CallLimit) -> Any:
    """The same RpcMethodHandler with a deserializer that cannot raise and a behaviour that answers its
    undecodable requests with INVALID_ARGUMENT and its calls over the limit with RESOURCE_EXHAUSTED."""
    kind = f"{'stream' if handler.request_streaming else 'unary'}_{'stream' if handler.response_streaming else 'unary'}"
    behavior = getattr(handler, kind)
    if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
        return handler  # a synchronous behaviour: grpc runs it in its own way, left as it is
    deserialize = handler.request_deserializer
    counted = limit.applies_to(method)

    def safe_deserialize(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return _Undecodable(
                f"the request is not a valid protobuf message for {method} ({len(data)} bytes; {error}); "
                "expected the method's request message"
            )

    # The checks are written out in both wrappers rather than awaited from a helper: a coroutine less per call.
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if type(request) is _Undecodable:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            if counted and limit.active >= limit.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, limit.refusal())
            if handler.request_streaming:
                request = _checked_stream(request)
            limit.active += counted
            try:
                async for response in behavior(request, context):
                    yield response
            except UndecodableRequestError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            finally:
                limit.active -= counted

        wrapped: Any = stream
    else:

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if type(request) is _Undecodable:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            if counted and limit.active >= limit.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, limit.refusal())
            if handler.request_streaming:
                request = _checked_stream(request)
            limit.active += counted
            try:
                return await behavior(request, context)
            except UndecodableRequestError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            finally:
                limit.active -= counted

        wrapped = unary
    return handler._replace(request_deserializer=safe_deserialize, **{kind: wrapped})


async def _checked_stream(requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if type(request) is _Undecodable:
            raise UndecodableRequestError(request.message)
        yield request

"""The guard every registered gRPC method gets (`guard_server`): undecodable request bytes become
INVALID_ARGUMENT (unary and inside streams) instead of grpc's UNKNOWN with a traceback, the calls served at once
are capped (--max-concurrent-rpcs, CallLimit), and request metadata over the limit is RESOURCE_EXHAUSTED where the
transport does not refuse it itself (CallLimit.metadata_bytes)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc

from cnnserve.server.errors import UndecodableRequestError


class _Undecodable:
    """What the guarded deserializer returns for bytes that do not parse (grpc would answer UNKNOWN and log)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class CallLimit:
    """The calls being served at once, across every guarded method but the probes' (`EXEMPT`); and the request
    metadata a call may send, when the transport leaves that check to the guard (`metadata_bytes`, else None)."""

    #: Cheap calls that probes and balancers make: never refused for concurrency.
    EXEMPT = frozenset({"ServerLive", "ServerReady", "ModelReady"})
    EXEMPT_SERVICES = frozenset({"grpc.health.v1.Health"})

    def __init__(self, limit: int, metadata_bytes: int | None = None) -> None:
        self.limit = limit
        self.active = 0
        self.metadata_bytes = metadata_bytes

    def applies_to(self, method: str) -> bool:
        service, _, name = method.lstrip("/").rpartition("/")
        return service not in self.EXEMPT_SERVICES and name not in self.EXEMPT

    def refusal(self) -> str:
        return (
            f"the server is serving its limit of {self.limit} concurrent calls (--max-concurrent-rpcs); "
            "retry later or on another server"
        )

    def metadata_refusal(self, context: grpc.aio.ServicerContext) -> str | None:
        """What to answer a call whose request metadata is over `metadata_bytes` (counted as grpc-core counts it:
        key + value + 32 bytes per entry); None when it is within the limit."""
        assert self.metadata_bytes is not None
        size = sum(len(key) + len(value) + 32 for key, value in context.invocation_metadata() or ())
        if size <= self.metadata_bytes:
            return None
        return f"request metadata is {size} bytes; at most {self.metadata_bytes} accepted"


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
    sized = limit.metadata_bytes is not None

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
            if sized and (refusal := limit.metadata_refusal(context)) is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
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
            if sized and (refusal := limit.metadata_refusal(context)) is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
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

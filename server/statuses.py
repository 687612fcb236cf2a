"""The one mapping of errors to gRPC statuses, and `@rpc_servicer`, which puts it around every RPC method.

`@rpc_servicer` on a servicer class wraps every RPC method (the CamelCase coroutine and async-generator methods)
with the one error mapping: a CnnserveError becomes `grpc.StatusCode[error.status]` with its message, anything
else is logged (rate-limited, with a reference the client's INTERNAL message quotes). No method carries its own
try/except for this.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from cnnserve.errors import CnnserveError
from cnnserve.server.faults import FAULTS

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=type)


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

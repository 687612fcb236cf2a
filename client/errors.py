"""The client's exception tree, and the one place that turns a gRPC error into it.

    CnnserveError                         (cnnserve.errors)
    └── ClientError                       anything the client library, `cnnserve classify` or `cnnserve bench`
        │                                 raises on purpose
        ├── ClientClosedError             the client is not open (never opened, or closed)
        ├── InvalidArgument               INVALID_ARGUMENT, OUT_OF_RANGE: bad input, found by the server or before
        │                                 sending (an unreadable file, a value that is not an image)
        ├── NotFound                      NOT_FOUND: unknown model or version
        ├── FailedPrecondition            FAILED_PRECONDITION
        ├── ResourceExhausted             RESOURCE_EXHAUSTED: a message over the size limit
        ├── PermissionDenied              PERMISSION_DENIED, UNAUTHENTICATED: missing or wrong credentials
        ├── Unimplemented                 UNIMPLEMENTED: the server lacks this call
        ├── Cancelled                     CANCELLED
        ├── DeadlineExceeded              DEADLINE_EXCEEDED: the call's timeout passed (never retried)
        ├── Unavailable                   UNAVAILABLE: down, draining or its queue full (retried when safe)
        │   ├── ServerUnreachable         no connection could be made at all (server down at start): exit 3
        │   └── BenchError                `cnnserve bench` cannot run: no server, unknown model, probe refused: exit 3
        └── Internal                      INTERNAL, UNKNOWN, DATA_LOSS and any other status

Each class's `status` is the gRPC status it stands for (as everywhere in the CnnserveError tree); an error's
`code` is the status of this one error: the server's own status name when a server answered (UNAUTHENTICATED
for a PermissionDenied, say), else the class's `status`. Read `code`.

Each error raised for a failed call says which call, to which server, and what the server said (status and
details), and is raised `from` the grpc.RpcError. `rpc_error()` is the only code that reads a grpc.RpcError.
A ClientConfig or TLSConfig that is wrong raises cnnserve.errors.ConfigError when it is made, before any call.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from cnnserve.errors import CnnserveError
from cnnserve.process import EXIT_STARTUP


class ClientError(CnnserveError):
    """Root of every error the client raises on purpose.

    `method` is the call that failed ("Classify", "ModelInfer", ...) or None when no call was made; `details`
    is the server's own message (or the client's, when the problem was found before sending); `code` is this
    error's gRPC status name: the server's when one answered, else the class's `status`.
    """

    status: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, method: str | None = None, details: str = "", code: str | None = None):
        super().__init__(message)
        self.method = method
        self.details = details or message
        self.code: str = code or self.status


class ClientClosedError(ClientError):
    status = "FAILED_PRECONDITION"


class InvalidArgument(ClientError):
    status = "INVALID_ARGUMENT"


class NotFound(ClientError):
    status = "NOT_FOUND"


class FailedPrecondition(ClientError):
    status = "FAILED_PRECONDITION"


class ResourceExhausted(ClientError):
    status = "RESOURCE_EXHAUSTED"


class PermissionDenied(ClientError):
    status = "PERMISSION_DENIED"


class Unimplemented(ClientError):
    status = "UNIMPLEMENTED"


class Cancelled(ClientError):
    status = "CANCELLED"


class DeadlineExceeded(ClientError):
    status = "DEADLINE_EXCEEDED"


class Unavailable(ClientError):
    status = "UNAVAILABLE"


class ServerUnreachable(Unavailable):
    """No connection to the server could be made (wrong address, server not started, TLS handshake refused)."""

    exit_code = EXIT_STARTUP


class BenchError(Unavailable):
    """`cnnserve bench` cannot run: server unreachable, model unknown, or the server refused the probe request."""

    exit_code = EXIT_STARTUP


class Internal(ClientError):
    status = "INTERNAL"


# gRPC status name -> the class that stands for it; a status missing here becomes Internal.
_BY_STATUS: dict[str, type[ClientError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "NOT_FOUND": NotFound,
    "FAILED_PRECONDITION": FailedPrecondition,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAUTHENTICATED": PermissionDenied,
    "UNIMPLEMENTED": Unimplemented,
    "CANCELLED": Cancelled,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "UNAVAILABLE": Unavailable,
}


def rpc_error(exc: grpc.RpcError, *, method: str, target: str) -> ClientError:
    """The ClientError for a failed call; the caller raises it `from exc`.

    Works for both grpc.RpcError from a sync channel and grpc.aio.AioRpcError (each has code() and details()).
    """
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or str(exc)
    return status_error(code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN", details, method, target)


def status_error(code: str, details: str, method: str, target: str) -> ClientError:
    """The ClientError for a status the server reported: a call's, or one request's inside a stream."""
    cls = _BY_STATUS.get(code, Internal)
    return cls(f"{method} to {target} failed with {code}: {details}", method=method, details=details, code=code)


def refused(target: str) -> ServerUnreachable:
    """The error for a first connection that was refused: nothing listens there."""
    return ServerUnreachable(
        f"cannot reach a cnnserve server at {target}: the connection was refused (nothing listens there); is the "
        "server running there (cnnserve serve --port ...), and is the address right? To wait for a server that is "
        "still starting, pass --wait (wait_for_server=True in ClientConfig)",
        code="UNAVAILABLE",
    )


def unreachable(target: str, waited_s: float, *, why: str = "") -> ServerUnreachable:
    """The error for a server that never accepted a connection within `waited_s` seconds."""
    reason = f" ({why})" if why else ""
    return ServerUnreachable(
        f"cannot reach a cnnserve server at {target}: no connection within {waited_s:g} s{reason}; "
        f"is the server running there (cnnserve serve --port ...), and is the address right?",
        code="UNAVAILABLE",
    )


def stream_ended(target: str) -> Internal:
    """The error for a ClassifyStream that ended before answering every request."""
    return Internal(
        f"ClassifyStream to {target} ended before answering every request; expected one response per request",
        method="ClassifyStream",
    )


def closed_error(target: str) -> ClientClosedError:
    """The error for a call on a client that was closed."""
    return ClientClosedError(
        f"the client for {target} is closed and cannot be reopened; create a new one (`with Client(...) as c:`)"
    )

"""The server's errors: what a request or a model can fail with, each carrying the gRPC status it becomes.

    CnnserveError (cnnserve.errors)
    └── ServerError                    INTERNAL
        ├── StartupError               UNAVAILABLE        the server cannot start (port in use, no repository): exit 3
        │   └── ProviderError          UNAVAILABLE        --device cuda, and onnxruntime runs another provider
        ├── VersionError               UNAVAILABLE        one version cannot serve: its reason (never sent as is)
        │   └── PolicyError            UNAVAILABLE        policy.json unreadable or invalid: each version's reason
        ├── ModelNotFoundError         NOT_FOUND          unknown model or version
        ├── ModelNotReadyError         UNAVAILABLE        known, but failed to load
        ├── InvalidInputError          INVALID_ARGUMENT   wrong name/dtype/shape/length/values
        │   └── UndecodableRequestError INVALID_ARGUMENT  request bytes that are not the method's message
        ├── QueueFullError             UNAVAILABLE        the bounded queue is full: fail at once
        ├── LimitExceededError         RESOURCE_EXHAUSTED a request over a limit (images, batch, concurrent calls)
        ├── DrainingError              UNAVAILABLE        SIGTERM received, not accepting new requests
        ├── DeadlineExceededError      DEADLINE_EXCEEDED  the deadline passed while queued; never ran
        ├── InferenceError             INTERNAL           onnxruntime failed on a batch
        ├── ModelLoadError             INVALID_ARGUMENT   an explicit load found no version that loads (reasons)
        ├── ModelControlError          FAILED_PRECONDITION load/unload without --model-control-mode explicit
        └── PeerError                  UNAVAILABLE        another worker failed a forwarded load/unload (--workers)

The services map them with `grpc.StatusCode[error.status]`; nothing here imports grpc. `shown` and `shown_dims`
bound what a message echoes of a request.
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnserve.errors import CnnserveError
from cnnserve.process import EXIT_STARTUP

#: Longest client-given string echoed back in a message (a 100 KB name must not become 100 KB of metadata).
ECHO_CHARS = 100
ECHO_DIMS = 8  # dimensions of a client-given shape echoed back


def shown(text: str) -> str:
    """A client-given string as a message shows it: repr'd, cut to ECHO_CHARS characters."""
    return repr(text) if len(text) <= ECHO_CHARS else repr(text[:ECHO_CHARS]) + f"... ({len(text)} characters)"


def shown_dims(dims: Sequence[int]) -> str:
    """A client-given shape as a message shows it: [1, 2, 3], cut after ECHO_DIMS dimensions."""
    if len(dims) <= ECHO_DIMS:
        return str(list(dims))
    return str(list(dims[:ECHO_DIMS]))[:-1] + f", ... ({len(dims)} dimensions)]"


class ServerError(CnnserveError):
    status = "INTERNAL"


class StartupError(ServerError):
    """Raised before the server serves anything; `cnnserve serve` exits with EXIT_STARTUP and this message."""

    status = "UNAVAILABLE"
    exit_code = EXIT_STARTUP


class ProviderError(StartupError):
    """The execution provider asked for is not the one onnxruntime gave. At start-up it stops the server; a version
    loaded later is UNAVAILABLE with this reason."""


class VersionError(ServerError):
    """Why one version cannot serve (a card, file or graph check failed): it becomes the version's UNAVAILABLE
    reason in RepositoryIndex and ListModels; the repository catches it, no request fails with it."""

    status = "UNAVAILABLE"


class PolicyError(VersionError):
    """policy.json is unreadable or not one of the three forms (the message says which form was expected)."""


class ModelNotFoundError(ServerError):
    status = "NOT_FOUND"


class ModelNotReadyError(ServerError):
    status = "UNAVAILABLE"


class InvalidInputError(ServerError):
    status = "INVALID_ARGUMENT"


class UndecodableRequestError(InvalidInputError):
    """The request bytes are not a protobuf message of the method's request type."""


class QueueFullError(ServerError):
    status = "UNAVAILABLE"


class LimitExceededError(ServerError):
    """A request larger than a configured limit, or one call too many; the message names the limit (its flag)."""

    status = "RESOURCE_EXHAUSTED"


class DrainingError(ServerError):
    status = "UNAVAILABLE"


class DeadlineExceededError(ServerError):
    status = "DEADLINE_EXCEEDED"


class InferenceError(ServerError):
    """onnxruntime failed on a batch; every request in that batch gets this."""

    status = "INTERNAL"


class ModelLoadError(ServerError):
    """RepositoryModelLoad: the model exists but none of its versions loaded; the message gives each reason."""

    status = "INVALID_ARGUMENT"


class ModelControlError(ServerError):
    """RepositoryModelLoad/Unload on a server whose --model-control-mode is not explicit."""

    status = "FAILED_PRECONDITION"


class PeerError(ServerError):
    """Another worker failed to apply a forwarded change; the message names it and gives its answer. UNAVAILABLE:
    the change is idempotent, so a client may retry it (the client library does)."""

    status = "UNAVAILABLE"

"""The error tree shared by every stage. Each error carries the gRPC status name it maps to.

    CnnserveError                      (INTERNAL)
    ├── ConfigError                    (INVALID_ARGUMENT)  a flag, env variable or config value is wrong
    ├── ModelCardError                 (FAILED_PRECONDITION) a model card is missing, malformed or inconsistent
    ├── DataError                      (INVALID_ARGUMENT)  a data file or folder is missing, truncated or corrupt
    ├── ImageError                     (INVALID_ARGUMENT)  image bytes cannot be decoded or converted
    ├── CheckpointError                (FAILED_PRECONDITION) a checkpoint cannot be read or does not fit
    └── ExportError                    (INTERNAL)          export failed (including a failed parity check)

Server-side errors (cnnserve.server.errors) and client-side errors (cnnserve.client.errors) subclass
CnnserveError too. The status is kept as a name so this module needs no grpc; the services map it with
`grpc.StatusCode[error.status]`.
"""

from __future__ import annotations

from typing import ClassVar


class CnnserveError(Exception):
    """Root of every error cnnserve raises on purpose."""

    #: Name of the grpc.StatusCode this error becomes when it crosses the wire.
    status: ClassVar[str] = "INTERNAL"


class ConfigError(CnnserveError):
    status = "INVALID_ARGUMENT"


class ModelCardError(CnnserveError):
    status = "FAILED_PRECONDITION"


class DataError(CnnserveError):
    status = "INVALID_ARGUMENT"


class ImageError(CnnserveError):
    status = "INVALID_ARGUMENT"


class CheckpointError(CnnserveError):
    status = "FAILED_PRECONDITION"


class ExportError(CnnserveError):
    status = "INTERNAL"

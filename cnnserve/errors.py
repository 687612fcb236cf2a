"""The error tree shared by every stage. Each error carries the gRPC status name it maps to, and the exit code a
`cnnserve` program ends with when the error ends it (cnnserve.process.exit_code: 1 failed, 2 usage, 3 could not
start).

    CnnserveError              (INTERNAL, exit 1)
    ├── ConfigError            (INVALID_ARGUMENT, exit 2)     a flag, env variable or config value is wrong
    ├── ModelCardError         (FAILED_PRECONDITION, exit 3)  a model card is missing, malformed or inconsistent
    ├── DataError              (INVALID_ARGUMENT, exit 3)     a data file or folder is missing, truncated or corrupt
    ├── ImageError             (INVALID_ARGUMENT, exit 3)     image bytes cannot be decoded or converted
    ├── CheckpointError        (FAILED_PRECONDITION, exit 3)  a checkpoint cannot be read or does not fit
    └── ExportError            (INTERNAL, exit 1)             export failed
        ├── ParityError        (INTERNAL, exit 1)             onnxruntime and PyTorch disagree beyond the tolerance
        └── RepositoryError    (FAILED_PRECONDITION, exit 3)  the model repository cannot take the new version

Server-side errors (cnnserve.server.errors) and client-side errors (cnnserve.client.errors) subclass
CnnserveError too. The status is kept as a name so this module needs no grpc; the services map it with
`grpc.StatusCode[error.status]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cnnserve.process import EXIT_FAILURE, EXIT_STARTUP, EXIT_USAGE

if TYPE_CHECKING:  # for the annotation only: at run time this module imports nothing of cnnserve but process
    from cnnserve.export.parity import ParityReport


class CnnserveError(Exception):
    """Root of every error cnnserve raises on purpose."""

    #: Name of the grpc.StatusCode this error becomes when it crosses the wire.
    status: ClassVar[str] = "INTERNAL"
    #: The exit code of a program this error ends once its job runs (cnnserve.process.exit_code).
    exit_code: ClassVar[int] = EXIT_FAILURE


class ConfigError(CnnserveError):
    status = "INVALID_ARGUMENT"
    exit_code = EXIT_USAGE


class ModelCardError(CnnserveError):
    status = "FAILED_PRECONDITION"
    exit_code = EXIT_STARTUP


class DataError(CnnserveError):
    status = "INVALID_ARGUMENT"
    exit_code = EXIT_STARTUP


class ImageError(CnnserveError):
    status = "INVALID_ARGUMENT"
    exit_code = EXIT_STARTUP


class CheckpointError(CnnserveError):
    status = "FAILED_PRECONDITION"
    exit_code = EXIT_STARTUP


class ExportError(CnnserveError):
    status = "INTERNAL"


class ParityError(ExportError):
    """onnxruntime and PyTorch disagree beyond the tolerance; `report` says where."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(f"parity check failed: onnxruntime and PyTorch disagree\n{report.summary()}")
        self.report = report


class RepositoryError(ExportError):
    """The model repository cannot take the new version (unwritable, or the version exists without --force)."""

    status = "FAILED_PRECONDITION"
    exit_code = EXIT_STARTUP

"""The error tree shared by every stage. Each error carries the gRPC status name it maps to.

    CnnserveError                      (INTERNAL)
    ├── ConfigError                    (INVALID_ARGUMENT)  a flag, env variable or config value is wrong
    ├── ModelCardError                 (FAILED_PRECONDITION) a model card is missing, malformed or inconsistent
    ├── DataError                      (INVALID_ARGUMENT)  a data file or folder is missing, truncated or corrupt
    ├── ImageError                     (INVALID_ARGUMENT)  image bytes cannot be decoded or converted
    ├── CheckpointError                (FAILED_PRECONDITION) a checkpoint cannot be read or does not fit
    └── ExportError                    (INTERNAL)          export failed
        ├── ParityError                (INTERNAL)          onnxruntime and PyTorch disagree beyond the tolerance
        └── RepositoryError            (FAILED_PRECONDITION) the model repository cannot take the new version

Server-side errors (cnnserve.server.errors) and client-side errors (cnnserve.client.errors) subclass
CnnserveError too. The status is kept as a name so this module needs no grpc; the services map it with
`grpc.StatusCode[error.status]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # for the annotation only: this module imports nothing of cnnserve at run time
    from cnnserve.export.parity import ParityReport


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


class ParityError(ExportError):
    """onnxruntime and PyTorch disagree beyond the tolerance; `report` says where."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(f"parity check failed: onnxruntime and PyTorch disagree\n{report.summary()}")
        self.report = report


class RepositoryError(ExportError):
    """The model repository cannot take the new version (unwritable, or the version exists without --force)."""

    status = "FAILED_PRECONDITION"

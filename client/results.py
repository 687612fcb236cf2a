"""What the client returns: small frozen dataclasses, never protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Prediction:
    """One class of a top-k answer."""

    label: str
    index: int  # position of the class in the model's labels (the logits' column)
    probability: float  # softmax of the logits, 0..1


@dataclass(frozen=True, slots=True)
class Classification:
    """The answer for one image: its top-k classes, best first, and the model version that answered.

    With `on_error="return"` an image that could not be classified (unreadable file, corrupt bytes) comes back
    with `top` empty and `error` saying why ("INVALID_ARGUMENT: cannot decode image ..."); check `ok` first.
    """

    id: str  # the file path for a path input, else the image's position in the call ("0", "1", ...)
    top: tuple[Prediction, ...]
    model: str
    version: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def label(self) -> str:
        """The top-1 label ("" when the image failed)."""
        return self.top[0].label if self.top else ""

    @property
    def probability(self) -> float:
        """The top-1 probability (0.0 when the image failed)."""
        return self.top[0].probability if self.top else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "top": [{"label": p.label, "index": p.index, "probability": p.probability} for p in self.top],
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One version of a model the server knows, ready or not (`reason` says why not; "" when ready)."""

    name: str
    version: int
    ready: bool
    reason: str = ""
    labels: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()  # (C, H, W) of one image
    input_dtype: str = ""  # "uint8" or "float32"


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """One input or output a model declares in ModelMetadata (Open Inference Protocol)."""

    name: str
    datatype: str  # "UINT8", "FP32", ...
    shape: tuple[int, ...]  # -1 for a variable dimension (the batch, first)


@dataclass(frozen=True, slots=True)
class RepositoryModel:
    """One entry of the server's repository index: a version and its state ("READY", "LOADING", "UNLOADING" or
    "UNAVAILABLE"), with the reason when it is not READY."""

    name: str
    version: int
    state: str
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "READY"


@dataclass(frozen=True, slots=True)
class Health:
    """The server's answer to grpc.health.v1 Check, for the whole server or one model."""

    service: str  # "" for the whole server, else a model name
    status: Literal["SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", "UNKNOWN"]

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

"""The model card: the one schema every stage shares (training writes it, export embeds it, server and client read it).

A card travels three ways: inside a training checkpoint, as `model.json` beside `model.onnx` in the model
repository, and flattened to strings in the ONNX file's `metadata_props` (key `cnnserve.card`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cnnserve.errors import ModelCardError

SCHEMA_VERSION = 1
#: The key under which export stores the whole card as JSON in the ONNX `metadata_props`.
ONNX_METADATA_KEY = "cnnserve.card"
#: A model version's folder, <repository>/<name>/<version>/, holds the graph and its card under these names:
#: export and import write them, the server and `classify --local` read them.
MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"

InputDType = Literal["uint8", "float32"]
#: How an image of any size becomes H x W: "stretch" to H x W (aspect ratio not kept), or "shorter": scale the
#: shorter side to `resize_shorter` keeping the aspect ratio, then cut the centre H x W (the ImageNet convention).
ResizeMode = Literal["stretch", "shorter"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What the network takes: one NCHW tensor of `dtype`, with a dynamic batch axis."""

    name: str = "input"
    layout: Literal["NCHW"] = "NCHW"
    channels: int = 1
    height: int = 28
    width: int = 28
    # uint8: raw pixels 0..255 and the graph normalizes itself; float32: already normalized.
    dtype: InputDType = "uint8"
    # Absent in a card (older ones): "stretch", what every card meant before the field existed.
    resize: ResizeMode = "stretch"
    resize_shorter: int | None = None  # pixels; "shorter" only, and at least max(height, width)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ModelCardError(f"input.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.height < 1 or self.width < 1:
            raise ModelCardError(f"input.height and input.width must be positive, got {self.height}x{self.width}")
        if self.layout != "NCHW":
            raise ModelCardError(f"input.layout must be 'NCHW', got {self.layout!r}")
        if self.dtype not in ("uint8", "float32"):
            raise ModelCardError(f"input.dtype must be 'uint8' or 'float32', got {self.dtype!r}")
        if self.resize not in ("stretch", "shorter"):
            raise ModelCardError(f"input.resize must be 'stretch' or 'shorter', got {self.resize!r}")
        if self.resize == "stretch" and self.resize_shorter is not None:
            raise ModelCardError("input.resize_shorter is set but input.resize is 'stretch'; expected resize 'shorter'")
        if self.resize == "shorter" and (
            self.resize_shorter is None or self.resize_shorter < max(self.height, self.width)
        ):
            raise ModelCardError(
                f"input.resize 'shorter' needs input.resize_shorter >= {max(self.height, self.width)} "
                f"(the centre crop is {self.height}x{self.width}), got {self.resize_shorter}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, without the batch axis: (C, H, W)."""
        return (self.channels, self.height, self.width)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What the network returns: one (N, num_classes) float32 tensor of unnormalized scores."""

    name: str = "logits"
    meaning: Literal["logits"] = "logits"


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-channel mean and std on the 0..1 scale: x = (pixel / 255 - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    # True when the exported graph does the normalization itself (it takes uint8 pixels).
    in_graph: bool = False

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ModelCardError(
                f"normalization.mean and .std must be non-empty and of equal length, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ModelCardError(f"normalization.std must be positive, got {list(self.std)}")


@dataclass(frozen=True, slots=True)
class ModelCard:
    """Everything a stage needs to know about a model without looking inside it."""

    name: str
    architecture: str
    input: InputSpec
    labels: tuple[str, ...]
    normalization: Normalization
    version: int = 1
    # Constructor arguments of the architecture, so the network can be rebuilt exactly.
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    output: OutputSpec = field(default_factory=OutputSpec)
    # Filled by training: test accuracy, data source, epochs, seed, wall time...
    training: Mapping[str, Any] = field(default_factory=dict)
    # Filled by export.
    opset: int | None = None
    sha256: str | None = None
    parity: Mapping[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ModelCardError(f"name must be a non-empty path-safe string, got {self.name!r}")
        if self.version < 1:
            raise ModelCardError(f"version must be a positive integer, got {self.version}")
        if len(self.labels) < 2:
            raise ModelCardError(f"labels must name at least 2 classes, got {list(self.labels)}")
        if len(self.normalization.mean) != self.input.channels:
            raise ModelCardError(
                f"normalization has {len(self.normalization.mean)} channel(s) but the input has {self.input.channels}"
            )
        if self.schema_version != SCHEMA_VERSION:
            raise ModelCardError(
                f"model card schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})"
            )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def evolve(self, **changes: Any) -> ModelCard:
        """A copy with some fields replaced (the card is frozen)."""
        return replace(self, **changes)

    # --- serialization -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arch_args"] = dict(self.arch_args)
        data["training"] = dict(self.training)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        try:
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(
                **{
                    **known,
                    "input": InputSpec(**data["input"]),
                    "output": OutputSpec(**data.get("output", {})),
                    "labels": tuple(data["labels"]),
                    "normalization": Normalization(
                        mean=tuple(data["normalization"]["mean"]),
                        std=tuple(data["normalization"]["std"]),
                        in_graph=bool(data["normalization"].get("in_graph", False)),
                    ),
                }
            )
        except ModelCardError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCardError(f"malformed model card: {exc!r}; expected the fields of ModelCard") from exc

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"model card is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelCardError(f"model card must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelCardError(f"cannot read model card {path}: {exc.strerror or exc}") from exc
        try:
            return cls.from_json(text)
        except ModelCardError as exc:
            raise ModelCardError(f"{path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

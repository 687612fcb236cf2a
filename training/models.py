"""The model zoo: small CNNs built by name from their constructor arguments, so a checkpoint rebuilds them exactly.

lenet       the seed network, layer for layer (61,610 parameters at 1x28x28, 10 classes)
lenet_relu  the same with ReLU between the Linear layers (same parameters, no longer a rank-84 linear head)
cnn_bn      two conv blocks with BatchNorm and Dropout; any channel count and any input size
efficientnet_lite0  the ImageNet network (training/efficientnet.py): 3x224x224, pretrained weights from a package
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cnnserve.errors import CheckpointError
from cnnserve.training.efficientnet import efficientnet_lite0


def lenet(in_channels: int = 1, num_classes: int = 10, relu_head: bool = False) -> nn.Sequential:
    """The seed LeNet. Shapes are for a 1x28x28 input; the Linear(400, ...) fixes the input at 28x28."""

    def act() -> list[nn.Module]:
        return [nn.ReLU()] if relu_head else []

    return nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=3, stride=1, padding=1),  # (B, 6, 28, 28)
        nn.ReLU(),
        nn.MaxPool2d(2, 2),  # (B, 6, 14, 14)
        nn.Conv2d(6, 16, kernel_size=5),  # (B, 16, 10, 10)
        nn.ReLU(),
        nn.MaxPool2d(2, 2),  # (B, 16, 5, 5)
        nn.Flatten(),  # (B, 400)
        nn.Linear(400, 120),  # (B, 120)
        *act(),
        nn.Linear(120, 84),  # (B, 84)
        *act(),
        nn.Linear(84, num_classes),  # (B, num_classes)
    )


def lenet_relu(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    return lenet(in_channels, num_classes, relu_head=True)


def _conv_block(c_in: int, c_out: int, dropout: float) -> list[nn.Module]:
    """Conv-BN-ReLU twice, then halve the resolution: (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout(dropout),
    ]


def cnn_bn(
    in_channels: int = 1,
    num_classes: int = 10,
    width: int = 32,
    hidden: int = 128,
    pooled: int = 7,
    dropout: float = 0.25,
    head_dropout: float = 0.5,
) -> nn.Sequential:
    """BatchNorm + Dropout CNN. Adaptive pooling to `pooled` x `pooled` makes it take any input size."""
    return nn.Sequential(
        *_conv_block(in_channels, width, dropout),  # (B, w, H/2, W/2)
        *_conv_block(width, 2 * width, dropout),  # (B, 2w, H/4, W/4)
        nn.AdaptiveAvgPool2d(pooled),  # (B, 2w, p, p)
        nn.Flatten(),  # (B, 2w*p*p)
        nn.Linear(2 * width * pooled * pooled, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(head_dropout),
        nn.Linear(hidden, num_classes),  # (B, num_classes)
    )


ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet": lenet,
    "lenet_relu": lenet_relu,
    "cnn_bn": cnn_bn,
    "efficientnet_lite0": efficientnet_lite0,
}


def build_model(architecture: str, **arch_args: Any) -> nn.Module:
    """Build a zoo model by name; `arch_args` are its constructor arguments (stored in the model card)."""
    try:
        factory = ZOO[architecture]
    except KeyError:
        raise CheckpointError(f"unknown architecture {architecture!r}; expected one of: {', '.join(ZOO)}") from None
    try:
        return factory(**arch_args)
    except TypeError as exc:
        raise CheckpointError(f"bad arguments for architecture {architecture!r}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""The card's normalization as a torch module: what training, distillation and the exported ONNX graph apply."""

from __future__ import annotations

import torch
from torch import nn

from cnnserve.card import Normalization
from cnnserve.preprocess import normalization_constants, normalized


class Normalize(nn.Module):
    """uint8 pixels (N, C, H, W) -> float32 (x / 255 - mean) / std, cnnserve.preprocess.normalize's arithmetic."""

    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor  # (1, C, 1, 1)

    def __init__(self, norm: Normalization) -> None:
        super().__init__()
        mean, std = normalization_constants(norm)
        # Buffers, not parameters: no gradient, and in an exported graph constants of shape (1, C, 1, 1).
        self.register_buffer("mean", torch.from_numpy(mean[None]))
        self.register_buffer("std", torch.from_numpy(std[None]))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = normalized(pixels.to(torch.float32), self.mean, self.std)
        return result

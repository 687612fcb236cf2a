"""Fixtures for the export tests: random-weight zoo checkpoints written with the real checkpoint format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.training.checkpoint import save_checkpoint
from cnnserve.training.data import FASHION_MNIST_LABELS
from cnnserve.training.models import build_model

MakeCheckpoint = Callable[..., Path]


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that a graph using batch statistics (train mode) would be caught."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> MakeCheckpoint:
    """`make_checkpoint(architecture, channels=1, height=28, width=28, labels=..., seed=0) -> Path`, each call
    in a fresh temporary folder."""

    def make(
        architecture: str,
        *,
        channels: int = 1,
        height: int = 28,
        width: int = 28,
        labels: Sequence[str] = FASHION_MNIST_LABELS,
        seed: int = 0,
        file_name: str | None = None,
    ) -> Path:
        torch.manual_seed(seed)
        arch_args = {"in_channels": channels, "num_classes": len(labels)}
        model = build_model(architecture, **arch_args)
        randomize_batchnorm(model)
        card = ModelCard(
            name=architecture,
            architecture=architecture,
            input=InputSpec(channels=channels, height=height, width=width),
            labels=tuple(labels),
            normalization=Normalization((0.2860,) * channels, (0.3530,) * channels),
            arch_args=arch_args,
            training={"test_accuracy": 0.5, "note": "random weights"},
        )
        folder = tmp_path_factory.mktemp("checkpoint")
        path = folder / (file_name or f"{architecture}-{channels}x{height}x{width}.pt")
        save_checkpoint(path, model, card)
        return path

    return make

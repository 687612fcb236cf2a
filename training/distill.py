"""Knowledge distillation: a trained checkpoint as teacher, its softened logits as extra targets for the student.

The loss is Hinton et al.'s (2015): (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T),
where _T is the softmax at temperature T. The student's network does not change; only its targets do.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnserve.card import InputSpec
from cnnserve.errors import ConfigError
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.normalize import Normalize

log = logging.getLogger(__name__)


class Teacher:
    """A frozen model from a checkpoint whose labels and input match the student's data."""

    def __init__(self, path: Path, labels: tuple[str, ...], spec: InputSpec, alpha: float, temperature: float) -> None:
        self.model, self.card = load_checkpoint(path)
        if self.card.labels != labels:
            raise ConfigError(
                f"--teacher {path}: its labels {list(self.card.labels)} are not the data's {list(labels)}"
            )
        if self.card.input.shape != spec.shape:
            raise ConfigError(f"--teacher {path}: it takes {self.card.input.shape} images; the data has {spec.shape}")
        self.model.requires_grad_(False)
        self.normalize = Normalize(self.card.normalization)  # the way the teacher was trained
        self.alpha, self.temperature = alpha, temperature
        self.path = path
        self.fixed: torch.Tensor | None = None  # (N, classes): logits for the whole training set, when precomputed

    def precompute(self, pixels: torch.Tensor) -> None:
        """Compute the targets of every training image once (when no augmentation changes the pixels)."""
        self.fixed = self.logits(pixels)

    def targets(self, pixels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a batch: uint8 `pixels` (B, C, H, W), which are rows `index` of the training set."""
        return self.logits(pixels) if self.fixed is None else self.fixed[index]

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Teacher logits (N, classes) for uint8 pixels (N, C, H, W), normalized the way the teacher was trained."""
        out = [self.model(self.normalize(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)]
        return torch.cat(out)

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor) -> torch.Tensor:
        """Blend the hard-label loss with the KL divergence to the teacher's softened distribution."""
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True,
                        reduction="batchmean")  # fmt: skip
        return (1.0 - self.alpha) * hard_loss + self.alpha * t * t * soft

    def describe(self) -> dict[str, Any]:
        """What the model card records about the teacher."""
        return {
            "checkpoint": str(self.path),
            "name": self.card.name,
            "architecture": self.card.architecture,
            "arch_args": dict(self.card.arch_args),
            "test_accuracy": self.card.training.get("test_accuracy"),
            "alpha": self.alpha,
            "temperature": self.temperature,
        }

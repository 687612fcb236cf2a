"""training/distill.py: the Teacher's logits, targets and blended loss, on a real checkpoint and real pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import ConfigError
from cnnserve.preprocess import normalize
from cnnserve.training.checkpoint import save_checkpoint
from cnnserve.training.data import FASHION_MNIST_LABELS, load_idx
from cnnserve.training.distill import Teacher
from cnnserve.training.models import build_model

SPEC = InputSpec(channels=1, height=28, width=28)


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("lenet_relu", in_channels=1, num_classes=10)
    card = ModelCard(
        name="teacher",
        architecture="lenet_relu",
        input=SPEC,
        labels=FASHION_MNIST_LABELS,
        normalization=Normalization((0.2860,), (0.3530,)),
        arch_args={"in_channels": 1, "num_classes": 10},
        training={"test_accuracy": 0.5},
    )
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, model, card)
    return path


@pytest.fixture(scope="module")
def pixels(fashion_mnist_dir: Path) -> torch.Tensor:
    return torch.tensor(load_idx(fashion_mnist_dir, "test").images[:50])  # (50, 1, 28, 28) uint8


def test_logits_are_the_teachers_on_its_own_normalization(teacher_checkpoint: Path, pixels: torch.Tensor) -> None:
    teacher = Teacher(teacher_checkpoint, FASHION_MNIST_LABELS, SPEC, alpha=0.7, temperature=4.0)
    with torch.inference_mode():
        expected = teacher.model(torch.from_numpy(normalize(pixels.numpy(), teacher.card.normalization)))
    torch.testing.assert_close(teacher.logits(pixels), expected, rtol=0, atol=0)
    torch.testing.assert_close(teacher.logits(pixels, batch_size=7), expected, rtol=1e-6, atol=1e-6)


def test_precomputed_targets_are_the_rows_of_the_batch(teacher_checkpoint: Path, pixels: torch.Tensor) -> None:
    teacher = Teacher(teacher_checkpoint, FASHION_MNIST_LABELS, SPEC, alpha=0.7, temperature=4.0)
    index = torch.tensor([3, 0, 41])
    live = teacher.targets(pixels[index], index)
    teacher.precompute(pixels)
    assert teacher.fixed is not None and teacher.fixed.shape == (50, 10)
    torch.testing.assert_close(teacher.targets(pixels[index], index), live)


def test_loss_blends_the_hard_loss_with_the_softened_kl(teacher_checkpoint: Path) -> None:
    teacher = Teacher(teacher_checkpoint, FASHION_MNIST_LABELS, SPEC, alpha=0.7, temperature=4.0)
    student, target = torch.randn(8, 10, generator=torch.Generator().manual_seed(1)), torch.randn(8, 10)
    hard = torch.tensor(2.0)
    # The student agreeing with the teacher leaves only the hard-label share.
    torch.testing.assert_close(teacher.loss(target, target, hard), torch.tensor(0.3 * 2.0))
    p_teacher = F.softmax(target / 4.0, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / 4.0, dim=1))).sum() / 8
    torch.testing.assert_close(teacher.loss(student, target, hard), 0.3 * hard + 0.7 * 16.0 * kl)


def test_describe_records_where_the_targets_came_from(teacher_checkpoint: Path) -> None:
    described = Teacher(teacher_checkpoint, FASHION_MNIST_LABELS, SPEC, alpha=0.7, temperature=4.0).describe()
    assert described == {"checkpoint": str(teacher_checkpoint), "name": "teacher", "architecture": "lenet_relu",
                         "arch_args": {"in_channels": 1, "num_classes": 10}, "test_accuracy": 0.5, "alpha": 0.7,
                         "temperature": 4.0}  # fmt: skip


def test_a_teacher_for_other_labels_or_images_is_refused(teacher_checkpoint: Path) -> None:
    labels = tuple(str(i) for i in range(10))
    with pytest.raises(ConfigError, match=r"--teacher .*teacher.pt: its labels \['T-shirt/top'"):
        Teacher(teacher_checkpoint, labels, SPEC, alpha=0.5, temperature=4.0)
    rgb = InputSpec(channels=3, height=28, width=28)
    with pytest.raises(ConfigError, match=r"it takes \(1, 28, 28\) images; the data has \(3, 28, 28\)"):
        Teacher(teacher_checkpoint, FASHION_MNIST_LABELS, rgb, alpha=0.5, temperature=4.0)

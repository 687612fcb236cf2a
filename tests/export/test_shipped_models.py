"""The models that ship in models/: intact, fully described, and the same classifier as the PyTorch they came from.

What proves ONNX == PyTorch on a clean clone, where the checkpoint is not shipped:
- reference.json holds PyTorch's argmax on all 10,000 Fashion-MNIST test images (and its logits on the first 64),
  written by the export from the checkpoint, with the sha256 of the pixels it saw. onnxruntime must reproduce
  every argmax (a tie within the parity tolerance excepted) and those logits to 1e-4, on the same pixels.
- the card's test accuracy was measured by training in PyTorch; onnxruntime must score the same, to the image.
When the checkpoint is present (checkpoints/<name>.pt, after `cnnserve train`), PyTorch itself is compared too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnserve.card import ONNX_METADATA_KEY, ModelCard
from cnnserve.export.exported_model import ExportedModel, cpu_session, pixels_sha256, predict_logits
from cnnserve.export.onnx import wrap_for_pixels
from cnnserve.export.parity import report_from_dict
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.data import FASHION_MNIST_LABELS, Dataset, channel_stats, load_idx

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "models"
CHECKPOINTS = REPO_ROOT / "checkpoints"
SHIPPED = ("fashion_lenet", "fashion_cnn_bn")
TEST_IMAGES = 10_000
ATOL = 1e-4


@pytest.fixture(scope="module", params=SHIPPED)
def shipped(request: pytest.FixtureRequest) -> ExportedModel:
    path = MODELS / request.param / "1"
    if not any(MODELS.glob("*/*/model.onnx")):
        pytest.skip(f"no model in {MODELS} yet: the trained models ship once training has finished")
    return ExportedModel.load(path)  # fails (not skips) when models/ exists but this model is missing or altered


@pytest.fixture(scope="module")
def test_set(fashion_mnist_dir: Path) -> Dataset:
    return load_idx(fashion_mnist_dir, "test")


@pytest.fixture(scope="module")
def onnx_logits(shipped: ExportedModel, test_set: Dataset) -> np.ndarray:
    """onnxruntime's logits (10000, 10) for the whole test set."""
    return predict_logits(cpu_session(shipped.model_bytes, threads=2), test_set.images)


def test_card_is_complete(shipped: ExportedModel, fashion_mnist_dir: Path) -> None:
    card = shipped.card
    assert card.name == shipped.path.parent.name and card.version == 1
    assert card.labels == FASHION_MNIST_LABELS
    assert card.input.shape == (1, 28, 28) and card.input.dtype == "uint8" and card.input.layout == "NCHW"
    assert card.output.name == "logits"
    assert card.normalization.in_graph
    # Normalization is the training set's own statistics, as training computed them.
    mean, std = channel_stats(load_idx(fashion_mnist_dir, "train").images)
    np.testing.assert_allclose(card.normalization.mean, mean, atol=1e-6)
    np.testing.assert_allclose(card.normalization.std, std, atol=1e-6)
    assert card.opset is not None and card.opset >= 17
    assert card.training["test_images"] == TEST_IMAGES
    assert 0.85 < card.training["test_accuracy"] <= 1.0
    report = report_from_dict(card.parity or {})
    assert report.passed and report.atol <= ATOL
    assert report.real_images is not None and report.real_images.count == TEST_IMAGES
    assert {c.batch_size for c in report.cases if c.inputs == "real"} == {1, 7, 64}


def test_onnx_metadata_carries_the_same_card(shipped: ExportedModel) -> None:
    session = cpu_session(shipped.model_bytes)
    embedded = ModelCard.from_json(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    assert embedded == shipped.card.evolve(sha256=None, parity=None)
    assert session.get_inputs()[0].shape == ["batch", 1, 28, 28]
    assert session.get_inputs()[0].type == "tensor(uint8)"


def test_onnx_accuracy_is_pytorchs_recorded_accuracy_to_the_image(
    shipped: ExportedModel, test_set: Dataset, onnx_logits: np.ndarray
) -> None:
    correct = int(np.sum(onnx_logits.argmax(axis=1) == test_set.labels))
    recorded = shipped.card.training["test_accuracy"]  # measured by training, in PyTorch
    assert correct == round(recorded * TEST_IMAGES)
    report = report_from_dict(shipped.card.parity or {})
    assert report.real_images is not None
    assert report.real_images.accuracy_onnx == report.real_images.accuracy_pytorch == correct / TEST_IMAGES


def test_onnx_reproduces_pytorchs_reference_on_every_test_image(
    shipped: ExportedModel, test_set: Dataset, onnx_logits: np.ndarray
) -> None:
    reference = shipped.reference()
    assert reference is not None, f"{shipped.path} has no reference.json"
    assert reference["images"]["sha256"] == pixels_sha256(test_set.images)  # the very pixels PyTorch saw
    expected = np.asarray(reference["predictions"])
    assert expected.shape == (TEST_IMAGES,)
    top2 = np.sort(onnx_logits, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) < ATOL
    differs = onnx_logits.argmax(axis=1) != expected
    assert int(np.sum(differs & ~tie)) == 0
    head = np.asarray(reference["logits"], dtype=np.float32)
    np.testing.assert_allclose(onnx_logits[: len(head)], head, atol=ATOL, rtol=0)


@pytest.mark.slow  # PyTorch over 10k images: about 10 s for the BN CNN on a quiet 2-core machine
def test_onnx_agrees_with_the_local_checkpoint(
    shipped: ExportedModel, test_set: Dataset, onnx_logits: np.ndarray
) -> None:
    checkpoint = CHECKPOINTS / f"{shipped.card.name}.pt"
    if not checkpoint.exists():
        pytest.skip(f"{checkpoint} is not here (it is not shipped); reference.json stands in for it")
    net, card = load_checkpoint(checkpoint, shipped.card.architecture)
    assert card.training["test_accuracy"] == shipped.card.training["test_accuracy"]
    model = wrap_for_pixels(net, shipped.card)
    with torch.inference_mode():
        batches = np.split(test_set.images, 20)  # copies: torch wants writable arrays
        expected = np.concatenate([model(torch.from_numpy(np.array(b))).numpy() for b in batches])
    assert np.abs(onnx_logits - expected).max() <= ATOL
    reference = shipped.reference()
    assert reference is not None
    assert expected.argmax(axis=1).tolist() == reference["predictions"]

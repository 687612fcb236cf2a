"""export/parity.py: onnxruntime against PyTorch on random and real pixels; a disagreement is reported, not hidden."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import ExportError, ParityError
from cnnserve.export.onnx import export_onnx, wrap_for_pixels
from cnnserve.export.parity import BATCH_SIZES, check_parity, random_pixels, report_from_dict
from cnnserve.training.data import FASHION_MNIST_LABELS, Dataset, load_idx
from cnnserve.training.models import build_model

CARD = ModelCard(
    name="lenet",
    architecture="lenet",
    input=InputSpec(),
    labels=FASHION_MNIST_LABELS,
    normalization=Normalization((0.2860,), (0.3530,), in_graph=True),
    arch_args={"in_channels": 1, "num_classes": 10},
)


def fashion_test(folder: Path, count: int) -> Dataset:
    test = load_idx(folder, "test")
    return Dataset(test.images[:count], test.labels[:count], test.label_names, f"{test.source}, first {count}")


def lenet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("lenet", in_channels=1, num_classes=10)


@pytest.fixture(scope="module")
def exported() -> tuple[torch.nn.Module, bytes]:
    net = lenet(0)
    return net, export_onnx(net, CARD).SerializeToString()


def test_the_export_agrees_on_random_and_real_pixels(
    exported: tuple[torch.nn.Module, bytes], fashion_mnist_dir: Path
) -> None:
    net, model_bytes = exported
    real = fashion_test(fashion_mnist_dir, 100)
    outcome = check_parity(wrap_for_pixels(net, CARD), model_bytes, CARD.input, labels=CARD.labels, real=real)
    report = outcome.report
    assert report.passed and report.max_abs_diff < 1e-4
    assert {(c.inputs, c.batch_size) for c in report.cases} == {(k, b) for k in ("random", "real") for b in BATCH_SIZES}
    assert report.real_images is not None and report.real_images.count == 100
    assert report.real_images.accuracy_onnx == report.real_images.accuracy_pytorch
    assert outcome.reference is not None and len(outcome.reference.predictions) == 100
    assert report_from_dict(report.to_dict()) == report  # what model.json stores reads back the same


def test_a_disagreement_fails_and_parity_error_carries_the_report(exported: tuple[torch.nn.Module, bytes]) -> None:
    _, model_bytes = exported
    other = wrap_for_pixels(lenet(1), CARD)  # other weights than the ONNX file's
    report = check_parity(other, model_bytes, CARD.input, labels=CARD.labels).report
    assert not report.passed and report.max_abs_diff > 1e-2
    error = ParityError(report)
    assert isinstance(error, ExportError) and error.report is report
    assert str(error).startswith("parity check failed: onnxruntime and PyTorch disagree\n")
    assert "FAILED" in str(error) and "<- fails" in str(error)


def test_real_images_of_another_shape_are_refused(
    exported: tuple[torch.nn.Module, bytes], fashion_mnist_dir: Path
) -> None:
    net, model_bytes = exported
    gray = fashion_test(fashion_mnist_dir, 8)
    rgb = Dataset(np.repeat(gray.images, 3, axis=1), gray.labels, gray.label_names, "the same images in RGB")
    with pytest.raises(ExportError, match=r"are \(3, 28, 28\); expected \(1, 28, 28\)"):
        check_parity(wrap_for_pixels(net, CARD), model_bytes, CARD.input, labels=CARD.labels, real=rgb)


def test_random_pixels_are_seeded_uint8_of_the_input_shape() -> None:
    spec = InputSpec(channels=3, height=5, width=7)
    first, again = random_pixels(spec, 4), random_pixels(spec, 4)
    assert first.dtype == np.uint8 and first.shape == (4, 3, 5, 7)
    np.testing.assert_array_equal(first, again)

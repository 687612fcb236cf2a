"""The shipped sample PNGs are Fashion-MNIST test images, pixel for pixel, with their labels in labels.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnserve.card import InputSpec
from cnnserve.export.samples import class_folder, read_labels_csv, write_samples
from cnnserve.preprocess import to_pixels
from cnnserve.training.data import FASHION_MNIST_LABELS, load_idx

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "fashion-mnist"


def test_shipped_samples_are_test_images_with_their_labels(fashion_mnist_dir: Path) -> None:
    if not SAMPLES.is_dir():
        pytest.fail(f"{SAMPLES} is missing; it ships with the repository (make samples)")
    test = load_idx(fashion_mnist_dir, "test")
    rows = read_labels_csv(SAMPLES)
    assert len(rows) == 20
    assert sorted(set(rows.values())) == sorted(FASHION_MNIST_LABELS)  # every class, two each
    for file, label in rows.items():
        folder, name = file.split("/")
        index = int(name.removesuffix(".png"))
        assert folder == class_folder(label)
        assert FASHION_MNIST_LABELS[test.labels[index]] == label
        np.testing.assert_array_equal(to_pixels(SAMPLES / file, InputSpec()), test.images[index])


def test_writing_samples_again_gives_the_same_bytes(fashion_mnist_dir: Path, tmp_path: Path) -> None:
    rows = write_samples(load_idx(fashion_mnist_dir, "test"), tmp_path, per_class=2)
    assert dict(rows) == read_labels_csv(SAMPLES)
    for file, _ in rows:
        assert (tmp_path / file).read_bytes() == (SAMPLES / file).read_bytes()
    assert (tmp_path / "labels.csv").read_bytes() == (SAMPLES / "labels.csv").read_bytes()


def test_class_folders_are_path_safe() -> None:
    labels = ("T-shirt/top", "Ankle boot", "Bag")
    assert [class_folder(label) for label in labels] == ["t-shirt-top", "ankle-boot", "bag"]

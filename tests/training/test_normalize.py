"""training/normalize.py: the torch module computes cnnserve.preprocess.normalize's numbers exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnserve.card import Normalization
from cnnserve.preprocess import normalize
from cnnserve.training.data import load_idx
from cnnserve.training.normalize import Normalize


def test_the_module_and_preprocess_normalize_agree_bit_for_bit(fashion_mnist_dir: Path) -> None:
    pixels = load_idx(fashion_mnist_dir, "test").images[:256]  # real Fashion-MNIST pixels, (N, 1, 28, 28) uint8
    norm = Normalization(mean=(0.2860,), std=(0.3530,))
    torch_values = Normalize(norm)(torch.tensor(pixels)).numpy()
    assert torch_values.dtype == np.float32 and torch_values.shape == pixels.shape
    np.testing.assert_array_equal(torch_values, normalize(pixels, norm))
    np.testing.assert_array_equal(torch_values[0, 0, 0, 0], (np.float32(pixels[0, 0, 0, 0]) / 255 - 0.2860) / 0.3530)


def test_three_channels_are_normalized_each_by_its_own_mean_and_std() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 3, 8, 8), dtype=np.uint8)
    norm = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    module = Normalize(norm)
    assert not any(True for _ in module.parameters())  # constants, never trained
    values = module(torch.from_numpy(pixels)).numpy()
    np.testing.assert_array_equal(values, normalize(pixels, norm))
    for c in range(3):
        expected = (pixels[:, c].astype(np.float32) / 255 - np.float32(norm.mean[c])) / np.float32(norm.std[c])
        np.testing.assert_allclose(values[:, c], expected, rtol=1e-6)

"""Fixtures for the training tests: tiny IDX data sets and image folders written into tmp_path."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# numpy dtype -> IDX type byte
IDX_TYPES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}  # fmt: skip


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array`: magic 00 00 <type> <ndim>, big-endian uint32 dims, big-endian payload."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_TYPES[big.dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + big.tobytes()


def _write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as IDX, gzip-compressed when the name ends in .gz."""
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """uint8 (N, size, size) images a model can tell apart: class k lights up horizontal band k, plus noise."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
    band = size // 10
    for i, label in enumerate(labels):
        images[i, label * band : (label + 1) * band, :] = 220
    return images


# The helpers as fixtures: with --import-mode=importlib a test module cannot import this conftest.
@pytest.fixture
def idx_bytes() -> Callable[[np.ndarray], bytes]:
    return _idx_bytes


@pytest.fixture
def write_idx() -> Callable[[Path, np.ndarray], Path]:
    return _write_idx


@pytest.fixture
def tiny_idx_dir(tmp_path: Path) -> Path:
    """A 10-class IDX data set in Fashion-MNIST's file layout: 256 training and 64 test images of 28x28."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "tiny-idx"
    folder.mkdir()
    for prefix, n in (("train", 256), ("t10k", 64)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", make_images(labels, rng))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write ROOT/<class>/<n>.<ext> images of assorted sizes, gray and RGB, PNG and JPEG; returns ROOT."""

    def make(name: str, classes: tuple[str, ...] = ("cat", "ant", "bee"), per_class: int = 4) -> Path:
        rng = np.random.default_rng(len(name))
        root = tmp_path / name
        for c, cls in enumerate(classes):
            (root / cls).mkdir(parents=True)
            for n in range(per_class):
                height, width = 17 + 5 * n, 41 - 3 * n  # odd, non-square sizes
                pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                pixels[:, :, c % 3] = 255  # a colour per class
                image = Image.fromarray(pixels)
                if n % 2:
                    image.convert("L").save(root / cls / f"{n}.png")
                else:
                    image.save(root / cls / f"{n}.jpg", quality=95)
        return root

    return make

"""Shared fixtures. Tests mirror the packages: tests/training, tests/export, tests/server, tests/client, tests/e2e."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST_DIR = Path(os.environ.get("CNNSERVE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
MODELS_DIR = REPO_ROOT / "models"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; `make data` installs Debian's dataset-fashion-mnist"
        )
    return FASHION_MNIST_DIR

"""Fixtures of the client tests: Fashion-MNIST test images written as PNG files in class folders, the served
Fashion model, and an onnxruntime session of it to compute expected answers independently of the server."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnserve.card import ModelCard
from cnnserve.training.data import FASHION_MNIST_LABELS, read_idx

#: Test images written to the tree: a few hundred, in the test set's order.
TREE_SIZE = 300


@dataclass(frozen=True)
class FashionModel:
    """The Fashion-MNIST model the running server serves, and an onnxruntime session of the same file."""

    name: str
    version: int
    folder: Path
    card: ModelCard
    session: Any

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 1, 28, 28) uint8 -> (N, 10) float32, straight from onnxruntime."""
        (out,) = self.session.run([self.card.output.name], {self.card.input.name: pixels})
        return np.asarray(out)


@dataclass(frozen=True)
class FashionTree:
    """TREE_SIZE test images as PNGs in <root>/<class folder>/<n>.png, and what they hold."""

    root: Path
    paths: tuple[Path, ...]  # in the order a folder walk yields them (sorted folders, then sorted names)
    pixels: np.ndarray  # (N, 1, 28, 28) uint8, row i is paths[i]
    labels: np.ndarray  # (N,) true class indices


def folder_name(label: str) -> str:
    """A class folder name for a label ("T-shirt/top" -> "T-shirt_top": a folder name has no "/")."""
    return re.sub(r"[^0-9A-Za-z-]+", "_", label)


@pytest.fixture(scope="session")
def fashion_model(served_repository: Path) -> FashionModel:
    import onnxruntime as ort

    for card_path in sorted(served_repository.glob("*/*/model.json")):
        card = ModelCard.load(card_path)
        if card.labels == FASHION_MNIST_LABELS and card.input.shape == (1, 28, 28) and card.input.dtype == "uint8":
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(card_path.parent / "model.onnx"), options)
            return FashionModel(card.name, card.version, card_path.parent, card, session)
    pytest.fail(f"no Fashion-MNIST uint8 1x28x28 model in {served_repository}")


@pytest.fixture(scope="session")
def fashion_tree(tmp_path_factory: pytest.TempPathFactory, fashion_mnist_dir: Path) -> FashionTree:
    images = read_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")[:TREE_SIZE]
    labels = read_idx(fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz")[:TREE_SIZE].astype(np.int64)
    root = tmp_path_factory.mktemp("fashion") / "test"
    written: list[tuple[Path, int]] = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / folder_name(FASHION_MNIST_LABELS[label])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(image).save(path)  # 2-D uint8: mode L
        written.append((path, i))
    written.sort(key=lambda item: (item[0].parent.name, item[0].name))
    order = [i for _, i in written]
    return FashionTree(root, tuple(p for p, _ in written), images[order][:, np.newaxis], labels[order])


@pytest.fixture
def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port

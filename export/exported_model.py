"""An exported model judged by onnxruntime alone (no torch): load a repository version, predict, score.

Used by the parity check, the tests of the shipped models and benchmarks/accuracy.py, so all three read a
version folder and run onnxruntime the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cnnserve.card import CARD_FILE, MODEL_FILE, ModelCard
from cnnserve.errors import ExportError, ModelCardError

#: PyTorch's predictions on the real parity images, so a clone without the checkpoint can re-check the ONNX.
REFERENCE_FILE = "reference.json"


@dataclass(frozen=True, slots=True, eq=False)
class ExportedModel:
    """One version folder: the ONNX bytes and the card beside them (sha256 checked on load)."""

    path: Path
    model_bytes: bytes
    card: ModelCard

    @classmethod
    def load(cls, path: Path) -> ExportedModel:
        try:
            model_bytes = (path / MODEL_FILE).read_bytes()
        except OSError as exc:
            raise ExportError(f"cannot read {path / MODEL_FILE}: {exc.strerror or exc}") from exc
        card = ModelCard.load(path / CARD_FILE)
        digest = hashlib.sha256(model_bytes).hexdigest()
        if card.sha256 != digest:
            raise ModelCardError(f"{path / MODEL_FILE} has sha256 {digest}; {path / CARD_FILE} says {card.sha256}")
        return cls(path, model_bytes, card)

    def reference(self) -> dict[str, Any] | None:
        """reference.json (written when the export's parity check ran on real images), or None."""
        file = self.path / REFERENCE_FILE
        return json.loads(file.read_text(encoding="utf-8")) if file.exists() else None


def cpu_session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """An onnxruntime CPU session with explicit thread counts (these checks share the cores with everything)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def pixels_sha256(images: np.ndarray) -> str:
    """Digest of a uint8 (N, C, H, W) pixel array, independent of how it was loaded."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


def predict_logits(session: ort.InferenceSession, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """float32 logits (N, num_classes) for uint8 images (N, C, H, W), in batches."""
    name = session.get_inputs()[0].name
    parts = [
        session.run(None, {name: np.ascontiguousarray(images[start : start + batch_size])})[0]
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


@dataclass(frozen=True, slots=True)
class Accuracy:
    correct: int
    total: int
    per_class: tuple[float, ...]  # accuracy on the images of each class, in label order

    @property
    def value(self) -> float:
        return self.correct / self.total


def score(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> Accuracy:
    """Overall and per-class accuracy of int predictions against int labels (both (N,))."""
    hits = predictions == labels
    per_class = tuple(
        float(hits[labels == c].mean()) if np.any(labels == c) else float("nan") for c in range(num_classes)
    )
    return Accuracy(correct=int(hits.sum()), total=len(labels), per_class=per_class)

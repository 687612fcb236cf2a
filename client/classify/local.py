"""`cnnserve classify --local`: the same job as the server's Classify, in-process with onnxruntime, no server.

It reads a model version from a model repository folder, preprocesses with cnnserve.preprocess.to_pixels (the
function the server uses on encoded bytes) and answers the same top-k as the server. onnxruntime is imported
only when a LocalClassifier is made, so the client package stays importable without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnserve.card import CARD_FILE, MODEL_FILE, ModelCard
from cnnserve.client.errors import InvalidArgument
from cnnserve.client.images import read_file
from cnnserve.client.results import Classification, Prediction
from cnnserve.errors import CnnserveError, ConfigError
from cnnserve.postprocess import default_top_k, top_k
from cnnserve.preprocess import normalize, to_pixels

log = logging.getLogger(__name__)


def resolve_version(path: str | Path) -> Path:
    """The version folder a --local argument names: models/NAME/VERSION, or models/NAME (its highest version)."""
    folder = Path(path)
    if (folder / MODEL_FILE).is_file():
        return folder
    versions = (
        [d for d in folder.iterdir() if d.name.isdigit() and (d / MODEL_FILE).is_file()] if folder.is_dir() else []
    )
    if not versions:
        raise ConfigError(
            f"--local {path}: no model here; expected models/NAME/VERSION/model.onnx (with model.json) or models/NAME"
        )
    return max(versions, key=lambda d: int(d.name))


def predictions(logits: np.ndarray, labels: Sequence[str], k: int) -> list[tuple[Prediction, ...]]:
    """Each row's k best classes as Predictions, best first: the server's Classify answer exactly (both call
    cnnserve.postprocess.top_k)."""
    indices, probabilities = top_k(logits, k)
    return [
        tuple(Prediction(labels[j], j, p) for j, p in zip(row, row_p, strict=True))
        for row, row_p in zip(indices.tolist(), probabilities.tolist(), strict=True)
    ]


class LocalClassifier:
    """One model version in an onnxruntime session, with Client.classify's answer for a list of paths."""

    def __init__(self, path: str | Path, *, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort  # lazy: only --local needs it

        folder = resolve_version(path)
        self.card = ModelCard.load(folder / CARD_FILE)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self._session: Any = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.name, self.version, self.labels = self.card.name, self.card.version, self.card.labels
        log.info("local model %s version %d from %s", self.name, self.version, folder)

    def _pixels(self, path: str) -> np.ndarray:
        # The server gets the file's bytes and decodes them; decode the same bytes here, the same way.
        return to_pixels(read_file(path), self.card.input)

    def classify(self, paths: Sequence[str], *, top_k: int | None = None) -> list[Classification]:
        """One Classification per path, in order; an unreadable or corrupt file gets `error` set."""
        k = top_k or default_top_k(self.card.num_classes)
        if not 1 <= k <= self.card.num_classes:
            raise InvalidArgument(f"top_k must be in 1..{self.card.num_classes} for {self.name}, got {k}")
        pixels: list[np.ndarray] = []
        errors: list[str] = []
        for path in paths:
            try:
                pixels.append(self._pixels(path))
                errors.append("")
            except CnnserveError as exc:
                errors.append(f"{exc.status}: {exc}")
        tops = iter(self._run(np.stack(pixels), k) if pixels else [])
        return [
            Classification(path, () if error else next(tops), self.name, self.version, error)
            for path, error in zip(paths, errors, strict=True)
        ]

    def _run(self, batch: np.ndarray, top_k: int) -> list[tuple[Prediction, ...]]:
        if self.card.input.dtype == "float32":
            batch = normalize(batch, self.card.normalization)
        (logits,) = self._session.run([self.card.output.name], {self.card.input.name: batch})
        return predictions(logits, self.labels, top_k)

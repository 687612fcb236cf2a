"""export/exported_model.py: a version folder read back and run by onnxruntime alone; its card's sha256 is checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnserve.card import CARD_FILE, MODEL_FILE
from cnnserve.errors import ModelCardError
from cnnserve.export.exported_model import (
    ExportedModel,
    cpu_session,
    pixels_sha256,
    predict_logits,
    score,
)
from cnnserve.export.parity import random_pixels


def test_a_version_folder_loads_and_predicts_in_any_batching(tiny_repository: Path) -> None:
    exported = ExportedModel.load(tiny_repository / "cnn_rgb" / "1")
    assert exported.card.input.shape == (3, 32, 40) and exported.reference() is None  # no real parity images
    pixels = random_pixels(exported.card.input, 9)
    session = cpu_session(exported.model_bytes)
    whole = predict_logits(session, pixels)
    assert whole.shape == (9, 3) and whole.dtype == np.float32
    np.testing.assert_allclose(predict_logits(session, pixels, batch_size=4), whole, rtol=1e-5, atol=1e-5)


def test_a_model_file_that_is_not_the_cards_is_refused(tiny_repository: Path, tmp_path: Path) -> None:
    folder = tmp_path / "lenet" / "1"
    shutil.copytree(tiny_repository / "lenet" / "1", folder)
    (folder / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(ModelCardError, match=f"{MODEL_FILE} has sha256 [0-9a-f]{{64}}; .*{CARD_FILE} says"):
        ExportedModel.load(folder)


def test_score_counts_overall_and_per_class() -> None:
    accuracy = score(np.array([0, 1, 1, 2, 0]), np.array([0, 1, 2, 2, 1]), num_classes=4)
    assert (accuracy.correct, accuracy.total, accuracy.value) == (3, 5, 0.6)
    assert accuracy.per_class[:3] == (1.0, 0.5, 0.5) and np.isnan(accuracy.per_class[3])  # no image of class 3


def test_pixels_sha256_depends_on_the_pixels_only() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 1, 3, 4)
    assert pixels_sha256(pixels) == pixels_sha256(np.asfortranarray(pixels)) != pixels_sha256(pixels[::-1])

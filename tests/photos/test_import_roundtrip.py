"""`cnnserve import` round trip on the real network: our efficientnet_lite0 exported to a plain float32 ONNX file
(fixed batch 1, no card, no normalization), imported, served beside the direct export, and answering the same."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from cnnserve.card import ModelCard
from cnnserve.client import Client
from cnnserve.export.importer import main as import_main
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.training.efficientnet import IMAGENET_MEAN, IMAGENET_STD, pretrained_imagenet

from .conftest import MODEL, Photos

# a second export of the network (plain, about 20 s) and a server of two models;
# pytest's default 300 s per test is not enough for that on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def plain_onnx(path: Path) -> None:
    """What a user brings from elsewhere: float32 normalized input `image` (1, 3, 224, 224), output `scores`."""
    import torch

    model, _ = pretrained_imagenet()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["image"], output_names=["scores"],
            dynamo=True, external_data=False,
        )  # fmt: skip


def test_an_imported_plain_export_answers_like_the_direct_export(
    imagenet_repository: Path, imagenet_card: ModelCard, photos: Photos, tmp_path: Path
) -> None:
    plain, labels = tmp_path / "plain.onnx", tmp_path / "labels.txt"
    plain_onnx(plain)
    labels.write_text("\n".join(imagenet_card.labels) + "\n")
    repository = tmp_path / "models"
    shutil.copytree(imagenet_repository / MODEL, repository / MODEL)
    argv = [
        str(plain), "--repository", str(repository), "--name", "imported", "--labels", str(labels),
        "--input", "3x224x224", "--mean", ",".join(map(str, IMAGENET_MEAN)), "--std", ",".join(map(str, IMAGENET_STD)),
        "--resize", "256",
    ]  # fmt: skip
    assert import_main(argv) == 0
    card = ModelCard.load(repository / "imported" / "1" / "model.json")
    assert card.input == dataclasses.replace(imagenet_card.input, name="image")
    assert card.training["original_batch"] == 1 and card.parity is not None and card.parity["max_abs_diff"] <= 1e-5

    files = [(photos.folder / name).read_bytes() for name in sorted(photos.files)]
    pixels = np.random.default_rng(3).integers(0, 256, size=(3, 3, 224, 224), dtype=np.uint8)
    config = ServerConfig(model_repository=repository, port=0, metrics_port=0, max_batch_size=4)
    with serve_in_thread(config) as server, Client(server.address) as client:
        direct = client.classify(files, top_k=5, model=MODEL)
        imported = client.classify(files, top_k=5, model="imported")
        direct_logits = client.infer(pixels, model=MODEL)
        imported_logits = client.infer(pixels, model="imported", input_name="image", output_name="scores")
    for a, b in zip(direct, imported, strict=True):
        assert [p.label for p in a.top] == [p.label for p in b.top]
        np.testing.assert_allclose([p.probability for p in a.top], [p.probability for p in b.top], atol=1e-5)
    np.testing.assert_allclose(imported_logits, direct_logits, atol=1e-4)

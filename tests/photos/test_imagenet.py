"""The ImageNet network end to end: `cnnserve export --pretrained` with parity on random and real photos, served
and classified through the Classifier API as JPEG and PNG files, and `cnnserve classify --local` giving the
server's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnserve.card import ModelCard
from cnnserve.client import Client
from cnnserve.client.classify.batch import main as classify_main
from cnnserve.server.app import RunningServer
from cnnserve.training.efficientnet import IMAGENET_MEAN, IMAGENET_STD, WEIGHTS_PACKAGE
from cnnserve.training.imagenet import imagenet_labels

from .conftest import MODEL, Photos

# the session's export takes about a minute on 2 shared cores;
# pytest's default 300 s per test is not enough for that on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_export_writes_the_imagenet_card_and_passes_parity_on_random_and_real_photos(
    imagenet_card: ModelCard, imagenet_repository: Path
) -> None:
    card = imagenet_card
    assert (card.architecture, card.input.shape, card.input.dtype) == ("efficientnet_lite0", (3, 224, 224), "uint8")
    assert (card.input.resize, card.input.resize_shorter) == ("shorter", 256)
    assert card.labels == imagenet_labels() and card.normalization.in_graph
    assert (card.normalization.mean, card.normalization.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert card.training["base_weights"]["package"] == WEIGHTS_PACKAGE
    assert card.training["base_weights"]["license"] == "Apache-2.0"
    parity = dict(card.parity or {})
    assert parity["passed"] is True
    cases = {(c["inputs"], c["batch_size"]): c for c in parity["cases"]}
    assert {("random", 1), ("random", 7), ("random", 64), ("real", 1), ("real", 7)} <= set(cases)
    assert all(c["max_abs_diff"] <= parity["atol"] and c["argmax_mismatches"] == 0 for c in cases.values())
    assert parity["real_images"]["count"] == 4
    assert (imagenet_repository / MODEL / "1" / "model.onnx").stat().st_size > 15_000_000


def test_served_photos_come_back_as_a_cat_and_an_espresso(imagenet_server: RunningServer, photos: Photos) -> None:
    names = sorted(photos.files)
    with Client(imagenet_server.address) as client:
        answers = client.classify([(photos.folder / n).read_bytes() for n in names], top_k=5, model=MODEL)
    for name, answer in zip(names, answers, strict=True):
        top5 = [p.label for p in answer.top]
        assert len(top5) == 5 and set(photos.files[name]) & set(top5), (name, top5)
        assert top5[0] in photos.files[name], (name, top5)
    jpeg, png = answers[names.index("chelsea.jpg")], answers[names.index("chelsea.png")]
    assert jpeg.top[0].probability == pytest.approx(png.top[0].probability, abs=0.1)  # JPEG at 90 is close


def test_raw_pixels_and_encoded_photos_agree(
    imagenet_server: RunningServer, photos: Photos, imagenet_card: ModelCard
) -> None:
    from cnnserve.preprocess import to_pixels

    path = photos.folder / "coffee.png"
    pixels = to_pixels(path, imagenet_card.input)[np.newaxis]  # (1, 3, 224, 224) uint8, resized the card's way
    with Client(imagenet_server.address) as client:
        logits = client.infer(pixels, model=MODEL)
        (answer,) = client.classify([path.read_bytes()], top_k=1, model=MODEL)
    assert imagenet_card.labels[int(logits[0].argmax())] == answer.top[0].label == "espresso"


def test_local_mode_gives_the_servers_rows(
    imagenet_server: RunningServer, imagenet_repository: Path, photos: Photos, tmp_path: Path
) -> None:
    served, local = tmp_path / "served.csv", tmp_path / "local.csv"
    common = [str(photos.folder), "--model", MODEL, "--top-k", "5", "--quiet"]
    assert classify_main([*common, "--server", imagenet_server.address, "--output", str(served)]) == 0
    assert classify_main([*common, "--local", str(imagenet_repository / MODEL), "--output", str(local)]) == 0
    rows = served.read_text().splitlines()
    assert len(rows) == 1 + len(photos.files) and "espresso" in served.read_text()
    assert local.read_text() == served.read_text()

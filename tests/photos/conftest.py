"""Fixtures of the photo tests: the real ImageNet EfficientNet-Lite0 exported once per session by
`cnnserve export --pretrained` (about a minute on 2 shared cores), skimage's real photos as JPEG and PNG files, and a
server on a free port serving the repository."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from cnnserve.card import ModelCard
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig

MODEL = "efficientnet_lite0"
#: skimage's photos, and the ImageNet classes each must have in its top 5 (any one of them).
CAT = ("tabby", "tiger cat", "Egyptian cat")
COFFEE = ("espresso", "cup", "coffee mug")
PHOTOS = {"chelsea.png": CAT, "coffee.png": COFFEE}


def skimage_photo(name: str) -> Path:
    import skimage

    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: scikit-image (dev extra) ships it")
    return path


@dataclass(frozen=True)
class Photos:
    folder: Path  # <folder>/<photo>.{jpg,png}
    files: dict[str, tuple[str, ...]]  # file name -> the classes one of which must be in its top 5


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Photos:
    """chelsea (a cat) and coffee (an espresso) as encoded JPEG (quality 90) and PNG files."""
    folder = tmp_path_factory.mktemp("photos")
    files: dict[str, tuple[str, ...]] = {}
    for name, classes in PHOTOS.items():
        image = Image.open(skimage_photo(name)).convert("RGB")
        stem = Path(name).stem
        image.save(folder / f"{stem}.jpg", quality=90)
        image.save(folder / f"{stem}.png")
        files |= {f"{stem}.jpg": classes, f"{stem}.png": classes}
    return Photos(folder, files)


@pytest.fixture(scope="session")
def imagenet_repository(tmp_path_factory: pytest.TempPathFactory, photos: Photos) -> Path:
    """A repository with efficientnet_lite0/1, made by the real CLI with the photos as the real parity images."""
    from cnnserve.export.cli import main as export_main

    repository = tmp_path_factory.mktemp("imagenet") / "models"
    parity = repository.parent / "parity"  # a folder of class folders, as --parity-data takes
    for file in photos.folder.iterdir():
        (parity / file.stem).mkdir(parents=True, exist_ok=True)
        (parity / file.stem / file.name).write_bytes(file.read_bytes())
    argv = ["--pretrained", MODEL, "--repository", str(repository), "--name", MODEL, "--parity-data", str(parity)]
    assert export_main(argv) == 0
    return repository


@pytest.fixture(scope="session")
def imagenet_card(imagenet_repository: Path) -> ModelCard:
    return ModelCard.load(imagenet_repository / MODEL / "1" / "model.json")


@pytest.fixture(scope="session")
def imagenet_server(imagenet_repository: Path) -> Iterator[RunningServer]:
    """The repository served on free ports; batches up to 8 so the warm-up (every size) stays short."""
    config = ServerConfig(model_repository=imagenet_repository, port=0, metrics_port=0, max_batch_size=8)
    with serve_in_thread(config) as server:
        yield server


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()

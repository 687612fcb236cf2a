"""Training data: the IDX reader (MNIST-format files, raw or gzip), IDX data sets, and image-folder data sets.

Everything here returns a `Dataset`: uint8 images (N, C, H, W), int64 labels, the class names and a one-line
description of where the data came from. Any missing, truncated or corrupt input raises `DataError` with one
line naming the file and what was expected.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Literal

import numpy as np

from cnnserve.card import InputSpec
from cnnserve.errors import DataError, ImageError
from cnnserve.preprocess import to_pixels

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: One class name per line; an IDX folder that has it names its classes with it.
LABELS_FILE = "labels.txt"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})

Split = Literal["train", "test"]
# IDX file-name prefix of each split (MNIST's and Fashion-MNIST's convention).
_SPLIT_PREFIX: dict[Split, str] = {"train": "train", "test": "t10k"}

# IDX type byte -> big-endian numpy dtype (the format's table: 0x08 ubyte ... 0x0E double).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True, eq=False)
class Dataset:
    """A labelled image set held in memory."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,), each in range(len(label_names))
    label_names: tuple[str, ...]
    source: str  # one line: what was read, from where

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.source}: images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise DataError(f"{self.source}: {len(self.images)} images but labels of shape {self.labels.shape}")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.label_names):
            raise DataError(
                f"{self.source}: labels span {int(self.labels.min())}..{int(self.labels.max())}; "
                f"expected 0..{len(self.label_names) - 1} for {len(self.label_names)} classes"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)


# --- IDX --------------------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed: detected from its first bytes) into a native-endian array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected an IDX file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off stream is EOFError
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({exc}); expected a gzip-compressed IDX file"
            ) from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: bad IDX magic {data[:4].hex(' ') or '(empty file)'}; expected 00 00 <type> <ndim> "
            f"with type one of {', '.join(f'{t:02x}' for t in _IDX_DTYPES)}"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: IDX header declares {ndim} dimension(s) but the file has {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: payload is {len(data) - header} bytes; expected {expected} for dims {dims} of {dtype.name}"
            f"{' (truncated)' if len(data) - header < expected else ''}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _idx_file(data_dir: Path, prefix: str, kind: str) -> Path:
    """Find `<prefix>-<kind>-ubyte[.gz]` (or MNIST's `<prefix>-<kind-with-dot>-ubyte`) in `data_dir`."""
    stem, idx = kind.rsplit("-", 1)  # "images-idx3" -> ("images", "idx3")
    names = [f"{prefix}-{kind}-ubyte", f"{prefix}-{stem}.{idx}-ubyte"]
    for name in names:
        for candidate in (data_dir / f"{name}.gz", data_dir / name):
            if candidate.is_file():
                return candidate
    raise DataError(f"{data_dir}: no {names[0]}[.gz] file; expected an IDX data set (MNIST layout) in this folder")


def idx_label_names(data_dir: Path, num_classes: int) -> tuple[str, ...]:
    """labels.txt in the folder, else Fashion-MNIST's names for a folder called *fashion*, else "0".."N-1"."""
    labels_file = data_dir / LABELS_FILE
    if labels_file.is_file():
        names = tuple(line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip())
        if len(names) < num_classes:
            raise DataError(f"{labels_file}: {len(names)} class names; expected at least {num_classes}, one per line")
        return names
    if "fashion" in data_dir.resolve().name.lower() and num_classes <= len(FASHION_MNIST_LABELS):
        return FASHION_MNIST_LABELS
    return tuple(str(i) for i in range(max(num_classes, 2)))


def load_idx(data_dir: str | Path, split: Split) -> Dataset:
    """One split of an IDX data set: `train-*` or `t10k-*` images (N, H, W) uint8 and labels (N,) uint8."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found; expected a folder of IDX files (MNIST layout)")
    prefix = _SPLIT_PREFIX[split]
    images_path = _idx_file(data_dir, prefix, "images-idx3")
    labels_path = _idx_file(data_dir, prefix, "labels-idx1")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: images are {images.dtype} {images.shape}; expected uint8 (N, H, W)")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: labels are {labels.dtype} {labels.shape}; expected uint8 (N,)")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    return Dataset(
        images=images[:, np.newaxis, :, :],  # (N, 1, H, W): a view, no copy
        labels=labels.astype(np.int64),
        label_names=idx_label_names(data_dir, num_classes),
        source=f"IDX {images_path.name} + {labels_path.name} in {data_dir}",
    )


# --- image folders ----------------------------------------------------------------------------------------------


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found; expected one sub-folder of images per class")
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if len(folders) < 2:
        raise DataError(f"{root}: {len(folders)} class sub-folder(s); expected at least 2 (one per class)")
    return folders


def load_image_folder(root: str | Path, spec: InputSpec, label_names: tuple[str, ...] | None = None) -> Dataset:
    """Every PNG/JPEG under `root/<class>/`, decoded and resized to `spec` by cnnserve.preprocess.to_pixels.

    Class names are the sorted sub-folder names; pass `label_names` to require exactly those (a test split must
    have the same classes as its training split).
    """
    root = Path(root)
    folders = _class_folders(root)
    names = tuple(f.name for f in folders)
    if label_names is not None and names != label_names:
        raise DataError(f"{root}: class folders {list(names)}; expected the training classes {list(label_names)}")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no PNG or JPEG files; expected at least one image per class folder")
        for file in files:
            try:
                images.append(to_pixels(file, spec))  # (C, H, W) uint8
            except ImageError as exc:
                raise DataError(f"{file}: {exc}") from exc
            labels.append(index)
    log.info("read %d images in %d classes from %s", len(images), len(names), root)
    return Dataset(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        label_names=names,
        source=f"image folder {root} ({len(images)} images, resized to {spec.channels}x{spec.height}x{spec.width})",
    )


def split_dataset(data: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded random (train, test) split; each class keeps at least one image in both parts when it can."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(data), dtype=bool)
    for label in range(len(data.label_names)):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        n_test = min(max(1, round(len(members) * test_fraction)), len(members) - 1)
        test_mask[members[:n_test]] = True

    def part(mask: np.ndarray, what: str) -> Dataset:
        return Dataset(data.images[mask], data.labels[mask], data.label_names, f"{data.source}, {what}")

    return part(~test_mask, f"{1 - test_fraction:.0%} train split"), part(test_mask, f"{test_fraction:.0%} test split")


def load_image_folders(root: str | Path, spec: InputSpec, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """`root/train/<class>/` + `root/test/<class>/` when both exist, else a seeded split of `root/<class>/`."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = load_image_folder(root / "train", spec)
        return train, load_image_folder(root / "test", spec, label_names=train.label_names)
    return split_dataset(load_image_folder(root, spec), test_fraction, seed)


# --- statistics -------------------------------------------------------------------------------------------------


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0..1 scale, exact (from a 256-bin histogram)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float(counts @ values / total)
        var = float(counts @ (values - mean) ** 2 / total)
        means.append(mean)
        stds.append(max(var**0.5, 1e-6))  # a constant channel would divide by zero
    return tuple(means), tuple(stds)

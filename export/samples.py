"""Sample images for the quickstart: the first few test images of each class, as PNGs in one folder per class.

    make samples [SAMPLES_ARGS="--data-dir /usr/share/datasets/fashion-mnist --out samples/fashion-mnist"]

writes `<out>/<class-folder>/<test-index>.png` (grayscale, the model's own 28x28 pixels) and `<out>/labels.csv`
(`file,label`, the exact class names: folder names are path-safe slugs, e.g. "T-shirt/top" is `t-shirt-top`).
The output depends only on the data, so re-running it changes nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cnnserve.errors import DataError
from cnnserve.process import EXIT_OK, EXIT_STARTUP
from cnnserve.training.data import DEFAULT_DATA_DIR, Dataset, load_idx

LABELS_CSV = "labels.csv"


def class_folder(label: str) -> str:
    """A path-safe folder name for a class: lower case, each run of other characters one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "class"


def pick(labels: np.ndarray, per_class: int, num_classes: int) -> list[int]:
    """Indices of the first `per_class` images of each class, class by class."""
    chosen: list[int] = []
    for label in range(num_classes):
        chosen += np.flatnonzero(labels == label)[:per_class].tolist()
    return chosen


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 (1, H, W) or (3, H, W) pixels as a PNG with no timestamps or other ancillary chunks."""
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_samples(data: Dataset, out: Path, per_class: int) -> list[tuple[str, str]]:
    """Write the PNGs and labels.csv; returns the (file, label) rows, file relative to `out`."""
    rows: list[tuple[str, str]] = []
    for index in pick(data.labels, per_class, len(data.label_names)):
        label = data.label_names[int(data.labels[index])]
        relative = f"{class_folder(label)}/{index}.png"
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(data.images[index]))
        rows.append((relative, label))
    with (out / LABELS_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("file", "label"))
        writer.writerows(rows)
    return rows


def read_labels_csv(folder: Path) -> dict[str, str]:
    """`labels.csv` of a samples folder: relative file path -> exact class name."""
    with (folder / LABELS_CSV).open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row["label"] for row in csv.DictReader(handle)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make samples",
        description="Write the first N test images of each class as PNGs, one folder per class, plus labels.csv.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"IDX folder (default: {DEFAULT_DATA_DIR})"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("samples/fashion-mnist"), help="output folder (default: samples/fashion-mnist)"
    )
    parser.add_argument("--per-class", type=int, default=2, help="images per class (default: 2)")
    args = parser.parse_args(argv)
    try:
        data = load_idx(args.data_dir, "test")
    except DataError as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    rows = write_samples(data, args.out, args.per_class)
    print(f"wrote {len(rows)} images and {LABELS_CSV} to {args.out}")
    return EXIT_OK

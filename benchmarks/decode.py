"""Decoding camera-sized images: images/s per core of cnnserve.preprocess.to_pixels, full decode vs JPEG draft mode,
and the shipped models' accuracy on Fashion-MNIST test images saved as large JPEGs, decoded both ways.

    .venv/bin/python benchmarks/decode.py [--seconds 1.5] [--accuracy-images 500] [--markdown-out FILE]

"full" decodes every pixel and then resizes (what to_pixels did before draft mode: open_image without a draft,
then to_pixels on the PIL image); "draft" is to_pixels on the encoded bytes, which lets libjpeg decode at the
smallest DCT scale (1/2, 1/4, 1/8) still at least the model's size. PNG has no such scale: both columns decode it
fully (the ratio shows the noise). Per core = images per CPU second of this one thread (Pillow decodes on one).
The photo stand-in: a mosaic of Fashion-MNIST test images, upscaled, with mild noise so it compresses like a photo.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from harness import machine, markdown_table
from PIL import Image

from cnnserve.card import InputSpec, ModelCard
from cnnserve.preprocess import open_image, to_pixels
from cnnserve.training.data import DEFAULT_DATA_DIR, load_idx

SIZES = ((640, 480), (3000, 2000))
TARGETS = (InputSpec(channels=1, height=28, width=28), InputSpec(channels=3, height=224, width=224))
JPEG_QUALITY = 90


def sample_images(data_dir: Path, count: int = 48) -> np.ndarray:
    """The first `count` Fashion-MNIST test images, (count, 28, 28) uint8: the photo stand-in's tiles."""
    images: np.ndarray = load_idx(data_dir, "test").images[:count].reshape(-1, 28, 28)
    return images


def full_decode(data: bytes, spec: InputSpec) -> np.ndarray:
    """to_pixels as it was before draft mode: decode every pixel, then convert and resize."""
    return to_pixels(open_image(data), spec)


def draft_decode(data: bytes, spec: InputSpec) -> np.ndarray:
    return to_pixels(data, spec)


def photo(images: np.ndarray, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """An RGB stand-in for a photo of `size`: tiles of different test images, tinted, upscaled, with noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    tiles_x, tiles_y = 8, 6
    rows = []
    for y in range(tiles_y):
        row = [images[(y * tiles_x + x) % len(images)] for x in range(tiles_x)]
        rows.append(np.concatenate(row, axis=1))
    mosaic = np.concatenate(rows, axis=0).astype(np.float32)  # (168, 224)
    tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    rgb = np.clip(mosaic[:, :, None] * tint + rng.uniform(0, 60, size=3), 0, 255).astype(np.uint8)
    big = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = np.clip(big + rng.normal(0, 4, size=(height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def per_core(decode: Callable[[bytes, InputSpec], np.ndarray], data: bytes, spec: InputSpec, seconds: float) -> float:
    """Images per CPU second of this thread, decoding `data` again and again for about `seconds`."""
    decode(data, spec)  # warm-up
    count, cpu_start, wall_end = 0, time.thread_time(), time.perf_counter() + seconds
    while time.perf_counter() < wall_end or count < 3:
        decode(data, spec)
        count += 1
    return count / max(time.thread_time() - cpu_start, 1e-9)


def speed_table(images: np.ndarray, seconds: float) -> str:
    rows = []
    for size in SIZES:
        picture = photo(images, size)
        for fmt in ("PNG", "JPEG"):
            data = encode(picture, fmt)
            for spec in TARGETS:
                full = per_core(full_decode, data, spec, seconds)
                draft = per_core(draft_decode, data, spec, seconds)
                rows.append(
                    [
                        fmt,
                        f"{size[0]}x{size[1]} ({len(data) / 1e6:.2f} MB)",
                        f"{spec.width}x{spec.height}x{spec.channels}",
                        f"{full:,.1f} ({1e3 / full:.1f} ms)",
                        f"{draft:,.1f} ({1e3 / draft:.1f} ms)",
                        f"**{draft / full:.2f}x**",
                    ]
                )
    header = ["format", "image (file size)", "into", "full decode img/s/core", "draft img/s/core", "draft / full"]
    return markdown_table(header, rows)


def accuracy_table(repository: Path, data_dir: Path, count: int) -> str:
    """Each shipped 28x28 grayscale model's accuracy on the first `count` test images: as the raw pixels, and as
    RGB JPEGs upscaled to each of SIZES, decoded full and draft."""
    import onnxruntime

    test = load_idx(data_dir, "test")
    images, labels = test.images[:count].reshape(-1, 28, 28), test.labels[:count]
    models = []
    for folder in sorted(repository.glob("*/[0-9]*")):
        card = ModelCard.from_json((folder / "model.json").read_text())
        if card.input.shape == (1, 28, 28):
            session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
            models.append((f"{card.name}/{card.version}", card, session))
    inputs: dict[str, np.ndarray] = {"raw 28x28 pixels": images[:, None, :, :]}
    for size in SIZES:
        files = [
            encode(Image.fromarray(image).convert("RGB").resize(size, Image.Resampling.BILINEAR), "JPEG")
            for image in images
        ]
        for name, decode in (("full", full_decode), ("draft", draft_decode)):
            inputs[f"JPEG {size[0]}x{size[1]}, {name}"] = np.stack([decode(f, TARGETS[0]) for f in files])
    rows = []
    for label, pixels in inputs.items():
        cells = []
        for _, card, session in models:
            logits = session.run(None, {card.input.name: pixels})[0]
            cells.append(f"{np.mean(logits.argmax(axis=1) == labels):.4f}")
        rows.append([label, *cells])
    return markdown_table([f"first {count} test images as", *(name for name, _, _ in models)], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per measured decoder and image")
    parser.add_argument("--accuracy-images", type=int, default=500, help="test images for the accuracy check (0: skip)")
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--markdown-out", type=Path, default=None)
    args = parser.parse_args(argv)
    before = machine()
    images = sample_images(args.data_dir)
    sections = [
        f"Run `python benchmarks/decode.py {' '.join(argv or sys.argv[1:])}`; Pillow {Image.__version__}, "
        f"JPEG quality {JPEG_QUALITY}.  \nMachine at start: {before}.",
        "### Decoding: images/s per core, full decode vs JPEG draft mode\n\n" + speed_table(images, args.seconds),
    ]
    if args.accuracy_images > 0:
        sections.append(
            "### Accuracy with JPEG draft mode (shipped models)\n\n"
            + accuracy_table(args.repository, args.data_dir, args.accuracy_images)
        )
    sections.append(f"Machine at end: {machine()}.")
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.markdown_out is not None:
        args.markdown_out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

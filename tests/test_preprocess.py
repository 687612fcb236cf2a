"""cnnserve.preprocess: the decompression-bomb guard (checked on the header before anything is decoded) and JPEG
draft mode (a large JPEG decoded at the DCT scale nearest the model's size, with nearly the same pixels)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.card import InputSpec
from cnnserve.errors import ImageError
from cnnserve.preprocess import MAX_IMAGE_PIXELS, open_image, to_pixels


def test_an_image_over_the_pixel_limit_is_refused_without_touching_pillows_global() -> None:
    before = Image.MAX_IMAGE_PIXELS
    buffer = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buffer, "PNG")  # 72 MP, a few KB compressed
    assert MAX_IMAGE_PIXELS < 9000 * 8000
    with pytest.raises(ImageError, match=r"9000x8000 pixels; at most 64000000 accepted"):
        open_image(buffer.getvalue())
    assert before == Image.MAX_IMAGE_PIXELS


def jpeg(pixels: np.ndarray, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize(size, Image.Resampling.BILINEAR).save(buffer, fmt)
    return buffer.getvalue()


def test_a_large_jpeg_decodes_at_a_dct_scale_still_at_least_the_model_size() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    data = jpeg(pixels, (1200, 800))
    assert open_image(data, draft=("L", (28, 28))).size == (150, 100)  # 1/8, the smallest scale there is
    assert open_image(data, draft=("RGB", (224, 224))).size == (600, 400)  # 1/2: 1/4 would be 200 high, < 224
    assert open_image(data, draft=("RGB", (1000, 700))).size == (1200, 800)  # no scale keeps 1000 wide
    assert open_image(jpeg(pixels, (1200, 800), "PNG"), draft=("L", (28, 28))).size == (1200, 800)  # PNG: no DCT


def test_draft_mode_gives_the_model_nearly_the_pixels_of_a_full_decode(fashion_mnist_dir: Path) -> None:
    from cnnserve.training.data import load_idx

    images = load_idx(fashion_mnist_dir, "test").images[:8].reshape(-1, 28, 28)
    for spec in (InputSpec(channels=1, height=28, width=28), InputSpec(channels=3, height=64, width=64)):
        for image in images:
            data = jpeg(image, (1200, 800))
            draft = to_pixels(data, spec).astype(np.int16)
            full = to_pixels(open_image(data), spec).astype(np.int16)  # decoded whole, then resized
            assert draft.shape == full.shape == spec.shape
            assert np.abs(draft - full).mean() < 2.0, "draft mode moved the pixels by more than 2 levels on average"

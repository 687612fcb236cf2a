"""cnnserve.preprocess: the decompression-bomb guard (checked on the header before anything is decoded), the
formats decoded, every decoder failure as an ImageError, alpha dropped onto white without RGBA copies, and JPEG
draft mode (a large JPEG decoded at the DCT scale nearest the model's size, with nearly the same pixels)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnserve.card import InputSpec, Normalization
from cnnserve.errors import ImageError
from cnnserve.preprocess import (
    MAX_IMAGE_PIXELS,
    DecodeLimits,
    normalization_constants,
    normalize,
    open_image,
    to_pixels,
)


def test_an_image_over_the_pixel_limit_is_refused_without_touching_pillows_global() -> None:
    before = Image.MAX_IMAGE_PIXELS
    buffer = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buffer, "PNG")  # 72 MP, a few KB compressed
    assert MAX_IMAGE_PIXELS == 16_000_000 < 9000 * 8000
    with pytest.raises(ImageError, match=r"9000x8000 pixels; at most 16000000 accepted"):
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


def _encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _dds_with_an_unknown_pixel_format() -> bytes:
    """A DDS header whose pixel format FourCC Pillow does not implement: it raises NotImplementedError."""
    header = struct.pack("<4sIIIIIII", b"DDS ", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44
    return header + struct.pack("<II4s", 32, 4, b"ZZZZ") + b"\0" * 40 + b"\0" * 64


def test_only_png_and_jpeg_are_decoded_unless_widened() -> None:
    gray = Image.new("L", (28, 28), 77)
    for fmt in ("PNG", "JPEG"):
        assert to_pixels(_encoded(gray, fmt), InputSpec()).shape == (1, 28, 28)
    for fmt in ("TIFF", "BMP", "GIF"):
        with pytest.raises(ImageError, match="not a PNG/JPEG image"):
            to_pixels(_encoded(gray, fmt), InputSpec())
    wider = DecodeLimits(formats=("PNG", "JPEG", "TIFF"))
    assert int(to_pixels(_encoded(gray, "TIFF"), InputSpec(), wider).mean()) == 77


def test_every_decoder_exception_becomes_an_image_error() -> None:
    data = _dds_with_an_unknown_pixel_format()
    with pytest.raises(NotImplementedError):  # what Pillow itself raises for this file
        Image.open(io.BytesIO(data)).load()
    with pytest.raises(ImageError, match=r"cannot decode image .*Unimplemented pixel format"):
        open_image(data, DecodeLimits(formats=("DDS",)))


def test_the_pixel_cap_is_configurable_and_read_from_the_header() -> None:
    data = _encoded(Image.new("RGB", (300, 200)), "JPEG")
    with pytest.raises(ImageError, match=r"300x200 pixels; at most 50000 accepted"):
        open_image(data, DecodeLimits(max_pixels=50_000))
    assert open_image(data, DecodeLimits(max_pixels=60_000)).size == (300, 200)


@pytest.mark.parametrize(
    ("mode", "height", "width"),
    [("RGBA", 31, 29), ("LA", 31, 29), ("PA", 31, 29), ("RGBA", 1100, 1000)],  # the last: in three strips
)
def test_transparency_drops_onto_white_exactly_like_an_alpha_composite(mode: str, height: int, width: int) -> None:
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA").convert(mode)
    for channels in (1, 3):
        spec = InputSpec(channels=channels, height=height, width=width)
        target = "L" if channels == 1 else "RGB"
        white = Image.new("RGBA", source.size, (255, 255, 255, 255))
        expected = np.asarray(Image.alpha_composite(white, source.convert("RGBA")).convert(target))
        got = to_pixels(_encoded(source.convert("RGBA") if mode == "PA" else source, "PNG"), spec)
        np.testing.assert_array_equal(got.transpose(1, 2, 0).reshape(expected.shape), expected)


def test_normalize_is_the_cards_mean_and_std_per_channel() -> None:
    norm = Normalization(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    mean, std = normalization_constants(norm)
    assert mean.shape == std.shape == (3, 1, 1) and mean.dtype == std.dtype == np.float32
    pixels = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 3, 1, 1).repeat(2, axis=2)  # (1, 3, 2, 1)
    values = normalize(pixels, norm)
    assert values.dtype == np.float32 and values.shape == pixels.shape
    np.testing.assert_allclose(values[0, :, 0, 0], [(0 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, 1.0], rtol=1e-6)
    assert normalize(pixels[0], norm).shape == (3, 2, 1)  # one image without the batch axis

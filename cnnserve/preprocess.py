"""Image preprocessing: the ONE function that turns an image into the pixels a model takes.

Training's evaluation of image folders, the server's Classifier API and the client's local mode all call
`to_pixels`, so a model sees the same pixels in training and in serving. Normalization (mean/std) is not done
here: the exported graph does it (the card says so with `normalization.in_graph`), or `normalize` does it for
float32 models and for training.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnserve.card import InputSpec, Normalization
from cnnserve.errors import ImageError

ImageSource: TypeAlias = "bytes | str | Path | Image.Image | np.ndarray"

# Refuse decompression bombs before decoding: a 28x28 classifier never needs a 100-megapixel image. Checked on the
# header's size, so Pillow's process-wide Image.MAX_IMAGE_PIXELS is left as the embedding program set it.
MAX_IMAGE_PIXELS = 64_000_000


def open_image(
    source: bytes | str | Path | Image.Image, *, draft: tuple[str, tuple[int, int]] | None = None
) -> Image.Image:
    """Decode encoded bytes or a file path (PNG, JPEG, anything Pillow reads) into a loaded PIL image.

    `draft` = (mode, (width, height)): a JPEG is decoded straight to that mode at the smallest DCT scale (1/2, 1/4,
    1/8) that still gives at least width x height pixels, instead of at full size (other formats ignore it).
    """
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageError("image bytes are empty; expected an encoded image (PNG, JPEG, ...)")
        stream: io.BytesIO | Path = io.BytesIO(bytes(source))
        where = f"{len(source)} bytes"
    else:
        stream = Path(source)
        where = str(source)
    try:
        with Image.open(stream) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"image ({where}) has {width}x{height} pixels; at most {MAX_IMAGE_PIXELS} accepted")
            if draft is not None and image.format == "JPEG":
                # libjpeg scales while it decodes: a 3000x2000 photo for a 224x224 model decodes as 375x250,
                # several times faster than decoding every pixel and then resizing them away.
                image.draft(*draft)
            image.load()
            return image
    except UnidentifiedImageError as exc:
        raise ImageError(f"cannot decode image ({where}): not a format Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image ({where}) is larger than Pillow's Image.MAX_IMAGE_PIXELS allows") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {where}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated") or SyntaxError (PNG).
        raise ImageError(f"cannot decode image ({where}): {exc}") from exc


def to_pixels(source: ImageSource, spec: InputSpec) -> np.ndarray:
    """One image as the model's uint8 pixels, shape (C, H, W) = spec.shape.

    Encoded bytes, paths and PIL images are decoded, converted to grayscale (C=1) or RGB (C=3) and resized to
    H x W with bilinear filtering; a JPEG is decoded at the smallest DCT scale still at least H x W (draft mode).
    A numpy array is taken as pixels already: (H, W), (H, W, C) or (C, H, W), uint8, and must have the model's
    size exactly (no resampling of raw tensors).
    """
    if isinstance(source, np.ndarray):
        return _array_to_pixels(source, spec)
    mode = "L" if spec.channels == 1 else "RGB"
    image = open_image(source, draft=(mode, (spec.width, spec.height)))
    if image.mode != mode:
        # Drop alpha onto white rather than black: it is how a person sees a transparent PNG.
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert(mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if spec.channels == 1:
        return pixels[np.newaxis, :, :]  # (1, H, W)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def _array_to_pixels(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageError(f"a pixel array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[np.newaxis, :, :]
    elif array.ndim == 3 and array.shape[0] not in (1, 3) and array.shape[2] in (1, 3):
        array = array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if array.shape != spec.shape:
        raise ImageError(f"pixel array has shape {array.shape}; expected {spec.shape} (C, H, W) for this model")
    return np.ascontiguousarray(array)


def normalize(pixels: np.ndarray, norm: Normalization) -> np.ndarray:
    """uint8 (..., C, H, W) -> float32 (pixel / 255 - mean) / std, per channel. Same arithmetic as the graph."""
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(-1, 1, 1)
    return ((pixels.astype(np.float32) / np.float32(255.0)) - mean) / std

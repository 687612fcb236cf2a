"""Image preprocessing: the ONE function that turns an image into the pixels a model takes.

Training's evaluation of image folders, the server's Classifier API and the client's local mode all call
`to_pixels`, so a model sees the same pixels in training and in serving. Normalization (mean/std) is not done
here: the exported graph does it (the card says so with `normalization.in_graph`), or `normalize` does it for
float32 models and for training.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnserve.card import InputSpec, Normalization
from cnnserve.errors import ImageError

ImageSource: TypeAlias = "bytes | str | Path | Image.Image | np.ndarray"

#: Formats decoded by default: what the project documents. Pillow knows dozens more (TIFF, JPEG 2000, DDS, ...),
#: each a decoder a client could reach; `DecodeLimits.formats` (the server's --image-formats) widens the list.
DEFAULT_IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG")
#: The file suffixes of DEFAULT_IMAGE_FORMATS: files a server with the default --image-formats decodes (the demo
#: sends only these from its samples folder).
DEFAULT_IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
#: The file suffixes a folder walk takes as images (`cnnserve classify`, `cnnserve bench --images`; lower case).
#: Wider than DEFAULT_IMAGE_SUFFIXES on purpose: these are formats --image-formats may add, and a file the server
#: does not decode comes back with the server's error (a row, a refused probe) instead of silently missing.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# Refuse decompression bombs before decoding: a 28x28 classifier never needs a 100-megapixel image. Checked on the
# header's size, so Pillow's process-wide Image.MAX_IMAGE_PIXELS is left as the embedding program set it.
# 16 MP is a 4900x3300 photo; decoded as RGBA it is 64 MB, the most one image may cost.
MAX_IMAGE_PIXELS = 16_000_000


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What a decode may cost: the formats Pillow may try, and the most pixels (width x height) an image may have."""

    formats: tuple[str, ...] = DEFAULT_IMAGE_FORMATS
    max_pixels: int = MAX_IMAGE_PIXELS


DEFAULT_LIMITS = DecodeLimits()


def open_image(
    source: bytes | str | Path | Image.Image,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    draft: tuple[str, tuple[int, int]] | None = None,
) -> Image.Image:
    """Decode encoded bytes or a file path (PNG or JPEG unless `limits` allows more) into a loaded PIL image.

    `draft` = (mode, (width, height)): a JPEG is decoded straight to that mode at the smallest DCT scale (1/2, 1/4,
    1/8) that still gives at least width x height pixels, instead of at full size (other formats ignore it).

    Every failure a decoder can raise (Pillow raises OSError, SyntaxError, ValueError, but also
    NotImplementedError, TypeError, struct.error, ... for odd files) becomes ImageError naming the image.
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
        with Image.open(stream, formats=limits.formats) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > limits.max_pixels:
                raise ImageError(f"image ({where}) has {width}x{height} pixels; at most {limits.max_pixels} accepted")
            if draft is not None and image.format == "JPEG":
                # libjpeg scales while it decodes: a 3000x2000 photo for a 224x224 model decodes as 375x250,
                # several times faster than decoding every pixel and then resizing them away.
                image.draft(*draft)
            image.load()
            return image
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"cannot decode image ({where}): not a {'/'.join(limits.formats)} image (the formats accepted)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image ({where}) is larger than Pillow's Image.MAX_IMAGE_PIXELS allows") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {where}") from exc
    except MemoryError as exc:
        raise ImageError(f"image ({where}) is too large to decode") from exc
    except Exception as exc:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated") or SyntaxError (PNG); odd
        # files as anything else. Only the exception's class and first line are shown (never a traceback).
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ImageError(f"cannot decode image ({where}): {detail}") from exc


def to_pixels(source: ImageSource, spec: InputSpec, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """One image as the model's uint8 pixels, shape (C, H, W) = spec.shape.

    Encoded bytes, paths and PIL images are decoded, converted to grayscale (C=1) or RGB (C=3) and resized to
    H x W with bilinear filtering (or as the card's resize says); a JPEG is decoded at the smallest DCT scale
    still at least that size (draft mode). A numpy array is taken as pixels already: (H, W), (H, W, C) or
    (C, H, W), uint8, and must have the model's size exactly (no resampling of raw tensors). `limits` bounds the
    decode.
    """
    if isinstance(source, np.ndarray):
        return _array_to_pixels(source, spec)
    mode = "L" if spec.channels == 1 else "RGB"
    image = open_image(source, limits, draft=(mode, _draft_size(spec)))
    try:
        image = _to_mode(image, mode)
    except Exception as exc:  # a decoder may still fail here: some formats decode lazily, per band
        size = f"{image.size[0]}x{image.size[1]}"
        raise ImageError(f"cannot convert the image ({image.mode}, {size}) to {mode}: {exc}") from exc
    image = resize(image, spec)
    pixels = np.asarray(image, dtype=np.uint8)
    if spec.channels == 1:
        return pixels[np.newaxis, :, :]  # (1, H, W)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


_STRIP_PIXELS = 1 << 20  # pixels composited at a time: a few MB of temporaries, whatever the image's size


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` as `mode` ("L" or "RGB"), alpha dropped onto white (how a person sees a transparent PNG).

    The colour is pasted through the alpha band onto white, strip by strip into the target image: the same pixels
    as an alpha_composite onto a white RGBA image, but with no full-size temporary beside the decoded image and
    its result (an alpha_composite makes three 4-byte copies: 192 MB more at 16 MP).
    """
    if image.mode == mode:
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette's transparency lives in its palette: expand it once
    if image.mode not in ("RGBA", "RGBa", "PA", "LA", "La"):
        return image.convert(mode)
    base = "L" if image.mode in ("LA", "La") else "RGB"
    width, height = image.size
    result = Image.new(mode, image.size)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        background = Image.new(base, strip.size, 255 if base == "L" else (255, 255, 255))
        background.paste(strip.convert(base), mask=strip.getchannel("A"))
        result.paste(background.convert(mode), (0, top))
    return result


def _draft_size(spec: InputSpec) -> tuple[int, int]:
    """The least size a JPEG may be decoded at for `resize` to see the same pixels' worth of detail."""
    if spec.resize == "shorter" and spec.resize_shorter is not None:
        return (spec.resize_shorter, spec.resize_shorter)  # both sides at least the shorter side's target
    return (spec.width, spec.height)


def resize(image: Image.Image, spec: InputSpec) -> Image.Image:
    """The card's resize step, bilinear: stretch to H x W, or the shorter side to `resize_shorter` then the centre
    H x W (the ImageNet convention: 256, then 224x224)."""
    if spec.resize == "shorter" and spec.resize_shorter is not None:
        width, height = image.size
        scale = spec.resize_shorter / min(width, height)
        size = (max(spec.width, round(width * scale)), max(spec.height, round(height * scale)))
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - spec.width) // 2, (size[1] - spec.height) // 2
        return image.crop((left, top, left + spec.width, top + spec.height))
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    return image


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


#: The largest uint8 pixel: `normalized` divides by it to put pixels on the 0..1 scale of the card's mean and std.
PIXEL_MAX = 255.0


def normalization_constants(norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """The card's mean and std as float32 (C, 1, 1) arrays: the constants of `normalized`, wherever it runs."""
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(-1, 1, 1)
    return mean, std


def normalized(x: Any, mean: Any, std: Any) -> Any:
    """(x / 255 - mean) / std for float32 pixels `x` (..., C, H, W): the one formula, for numpy arrays here and
    torch tensors in training and the exported graph (cnnserve.training.normalize), so both compute the same."""
    return (x / PIXEL_MAX - mean) / std


def normalize(pixels: np.ndarray, norm: Normalization) -> np.ndarray:
    """uint8 (..., C, H, W) -> float32 (pixel / 255 - mean) / std, per channel. Same arithmetic as the graph."""
    mean, std = normalization_constants(norm)
    result: np.ndarray = normalized(pixels.astype(np.float32), mean, std)
    return result

"""What a caller may pass as images, turned into what travels: encoded file bytes or raw uint8 pixels.

Paths are read and sent as they are (the server decodes them with cnnserve.preprocess.to_pixels, the function
training used); PIL images are sent as lossless PNG; numpy arrays are sent as raw pixels, which must already
have the model's size. Nothing here decodes or resizes. Also here: splitting a long list into requests that fit
the message size limit.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias, cast

import numpy as np
from PIL import Image

from cnnserve.client.errors import InvalidArgument, ResourceExhausted

#: One image as a caller may give it: a file path, encoded bytes (PNG, JPEG, ...), a PIL image, or uint8 pixels
#: shaped (H, W), (H, W, C) or (C, H, W).
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | Image.Image | np.ndarray"
#: One image, or several: a sequence of the above, or a 4-D array (N, C, H, W) / (N, H, W, C) of N images.
ImagesInput: TypeAlias = "ImageInput | Sequence[ImageInput]"

# Bytes a request spends on one image beside its data (the id, field tags, lengths); generous on purpose.
_PER_IMAGE_OVERHEAD = 64
# Bytes of the request beside its images (model name, top_k, request id).
_REQUEST_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class ImageItem:
    """One image ready to send: exactly one of `encoded`, `pixels` or `error` is set.

    `error` marks an image the client could not even read (a missing file); it is never sent, and its result
    carries the error.
    """

    id: str
    encoded: bytes | None = None
    pixels: np.ndarray | None = None  # uint8, (C, H, W) when layout is "CHW", (H, W, C) when "HWC"
    layout: Literal["CHW", "HWC"] = "CHW"
    error: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes this image adds to a request."""
        data = len(self.encoded) if self.encoded is not None else 0
        data += self.pixels.nbytes if self.pixels is not None else 0
        return data + len(self.id.encode()) + _PER_IMAGE_OVERHEAD


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image file; InvalidArgument (saying which file and why) when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read image file {os.fspath(path)}: {exc.strerror or exc}") from exc


def _is_single(images: object) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim <= 3
    return isinstance(images, str | bytes | bytearray | memoryview | os.PathLike | Image.Image)


def iter_images(images: ImagesInput) -> Iterator[ImageInput]:
    """The images of a call, one at a time: a single image, a sequence of them, or a 4-D array's rows."""
    if _is_single(images):
        yield images  # type: ignore[misc]
    elif isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise InvalidArgument(
                f"a pixel array must be one image (H, W), (H, W, C), (C, H, W) or a batch (N, C, H, W); "
                f"got shape {images.shape}"
            )
        yield from images
    elif isinstance(images, Iterable):
        yield from cast("Iterable[ImageInput]", images)
    else:
        raise InvalidArgument(
            f"cannot classify a {type(images).__name__}; expected a path, bytes, a PIL image, a uint8 numpy array, "
            f"or a list of them"
        )


def to_item(image: ImageInput, index: int, *, read_errors: bool = False) -> ImageItem:
    """The ImageItem for one input; `index` names it when it is not a path.

    A file that cannot be read raises InvalidArgument, or with `read_errors` comes back as an item with `error`
    set (the batch CLI keeps going). Any other unusable input always raises.
    """
    if isinstance(image, str | os.PathLike):
        name = os.fspath(image)
        try:
            return ImageItem(id=name, encoded=read_file(name))
        except InvalidArgument as exc:
            if not read_errors:
                raise
            return ImageItem(id=name, error=f"{exc.status}: {exc}")  # as a server's per-image error reads
    if isinstance(image, bytes | bytearray | memoryview):
        return ImageItem(id=str(index), encoded=bytes(image))
    if isinstance(image, Image.Image):
        # PNG is lossless and keeps the mode (L, RGB, RGBA, P), so the server's decode gives back these pixels.
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ImageItem(id=str(index), encoded=buffer.getvalue())
    if isinstance(image, np.ndarray):
        return _pixels_item(image, str(index))
    raise InvalidArgument(
        f"image {index} is a {type(image).__name__}; expected a path, bytes, a PIL image or a uint8 numpy array"
    )


def _pixels_item(array: np.ndarray, name: str) -> ImageItem:
    if array.dtype != np.uint8:
        raise InvalidArgument(f"image {name}: a pixel array must be uint8 (0..255), got {array.dtype}")
    if array.ndim == 2:
        return ImageItem(id=name, pixels=np.ascontiguousarray(array[np.newaxis]), layout="CHW")
    # The same rule as cnnserve.preprocess: channels last when the first axis cannot be channels.
    if array.ndim == 3 and array.shape[0] not in (1, 3) and array.shape[2] in (1, 3):
        return ImageItem(id=name, pixels=np.ascontiguousarray(array), layout="HWC")
    if array.ndim == 3 and array.shape[0] in (1, 3):
        return ImageItem(id=name, pixels=np.ascontiguousarray(array), layout="CHW")
    raise InvalidArgument(
        f"image {name}: pixel array of shape {array.shape}; expected (H, W), (H, W, C) or (C, H, W) with C 1 or 3"
    )


def prepare(images: ImagesInput, *, read_errors: bool = False) -> list[ImageItem]:
    """Every image of a call as an ImageItem, in order."""
    items = [to_item(image, i, read_errors=read_errors) for i, image in enumerate(iter_images(images))]
    if not items:
        raise InvalidArgument("no images to classify; expected at least one")
    return items


def sends(group: Sequence[ImageItem]) -> bool:
    """Whether a group goes to the server (False: every image in it failed before sending)."""
    return any(not item.error for item in group)


def chunk(items: Sequence[ImageItem], *, max_bytes: int, max_count: int) -> Iterator[list[ImageItem]]:
    """Consecutive groups of items, each a request under `max_bytes` with at most `max_count` images.

    Items with `error` set travel with their neighbours (they take no room and are never sent). An image that
    cannot fit in any request raises ResourceExhausted before anything is sent.
    """
    budget = max_bytes - _REQUEST_OVERHEAD
    group: list[ImageItem] = []
    size = count = 0  # bytes and images to send in `group`
    for item in items:
        if item.error:
            group.append(item)
            continue
        if item.nbytes > budget:
            raise ResourceExhausted(
                f"image {item.id} is {item.nbytes} bytes, more than one request may carry "
                f"({max_bytes} bytes, the client's max_message_bytes); expected a smaller image or a larger limit "
                f"on both the server (--max-message-bytes) and the client"
            )
        if count and (size + item.nbytes > budget or count >= max_count):
            yield group
            group, size, count = [], 0, 0
        group.append(item)
        size += item.nbytes
        count += 1
    if group:
        yield group


def split_rows(array: np.ndarray, *, max_bytes: int, max_rows: int | None = None) -> Iterator[np.ndarray]:
    """Row blocks of a batched tensor, each under `max_bytes` and at most `max_rows` rows (for ModelInfer, which
    carries one raw tensor; the server caps its batch dimension, --max-infer-batch-size)."""
    if array.ndim == 0 or array.shape[0] == 0:
        yield array
        return
    row_bytes = max(1, array.nbytes // array.shape[0])
    rows = (max_bytes - _REQUEST_OVERHEAD) // row_bytes
    if rows < 1:
        raise ResourceExhausted(
            f"one row of the input tensor is {row_bytes} bytes, more than a request may carry ({max_bytes} bytes); "
            f"expected a larger max_message_bytes on both the server and the client"
        )
    if max_rows is not None:
        rows = min(rows, max_rows)
    for start in range(0, array.shape[0], rows):
        yield array[start : start + rows]

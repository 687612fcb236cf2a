"""cnnserve.preprocess: the decompression-bomb guard, checked on the header before anything is decoded."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cnnserve.errors import ImageError
from cnnserve.preprocess import MAX_IMAGE_PIXELS, open_image


def test_an_image_over_the_pixel_limit_is_refused_without_touching_pillows_global() -> None:
    before = Image.MAX_IMAGE_PIXELS
    buffer = io.BytesIO()
    Image.new("L", (9000, 8000)).save(buffer, "PNG")  # 72 MP, a few KB compressed
    assert MAX_IMAGE_PIXELS == 16_000_000 < 9000 * 8000
    with pytest.raises(ImageError, match=r"9000x8000 pixels; at most 16000000 accepted"):
        open_image(buffer.getvalue())
    assert before == Image.MAX_IMAGE_PIXELS

"""The card's resize step: "stretch" (what every card without the field means) or the shorter side then the centre
crop, applied by cnnserve.preprocess.to_pixels for every stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import ModelCardError
from cnnserve.preprocess import to_pixels

CROP = InputSpec(channels=3, height=224, width=224, resize="shorter", resize_shorter=256)


def gradient(width: int, height: int) -> Image.Image:
    """An RGB image whose every pixel says where it is: R = column, G = row (scaled to 0..255)."""
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    return Image.fromarray(np.stack([cols, rows, np.zeros_like(cols)], axis=-1).astype(np.uint8))


def test_shorter_side_then_centre_crop_is_resize_then_crop_in_pillow() -> None:
    image = gradient(640, 480)  # shorter side 480 -> 256: 341x256, then the centre 224x224
    expected = image.resize((341, 256), Image.Resampling.BILINEAR).crop((58, 16, 282, 240))
    pixels = to_pixels(image, CROP)
    assert pixels.shape == (3, 224, 224)
    np.testing.assert_array_equal(pixels, np.asarray(expected).transpose(2, 0, 1))
    # The aspect ratio is kept: the middle column of the crop is the middle of the photo, not a stretched one.
    assert abs(int(pixels[0, 112, 112]) - 128) <= 2 and abs(int(pixels[1, 112, 112]) - 128) <= 2


def test_portrait_images_are_cut_top_and_bottom() -> None:
    pixels = to_pixels(gradient(300, 900), CROP)  # 256x768, then columns 16..240 and rows 272..496
    assert pixels.shape == (3, 224, 224)
    assert 12 < pixels[0, 0, 0] < 20 and 234 < pixels[0, 0, -1] < 242  # nearly the full width ...
    assert 86 < pixels[1, 0, 0] < 95 and 160 < pixels[1, -1, 0] < 169  # ... and the middle third of the height


def test_stretch_is_the_default_and_old_cards_mean_what_they_meant() -> None:
    card = ModelCard.from_dict(
        {
            "name": "old",
            "architecture": "lenet",
            "input": {"channels": 1, "height": 28, "width": 28},
            "labels": ["a", "b"],
            "normalization": {"mean": [0.5], "std": [0.5]},
        }
    )
    assert card.input.resize == "stretch" and card.input.resize_shorter is None
    pixels = to_pixels(gradient(56, 28), card.input)
    expected = np.asarray(gradient(56, 28).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(pixels[0], expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resize": "shorter"}, "needs input.resize_shorter >= 224"),
        ({"resize": "shorter", "resize_shorter": 200}, "got 200"),
        ({"resize_shorter": 256}, "input.resize is 'stretch'"),
        ({"resize": "fit"}, "must be 'stretch' or 'shorter'"),
    ],
)
def test_bad_resize_fields_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ModelCardError, match=message):
        InputSpec(channels=3, height=224, width=224, **fields)  # type: ignore[arg-type]


def test_the_resize_round_trips_through_the_card_json() -> None:
    card = ModelCard(
        name="photos",
        architecture="efficientnet_lite0",
        input=CROP,
        labels=("a", "b"),
        normalization=Normalization((0.5,) * 3, (0.5,) * 3),
    )
    again = ModelCard.from_json(card.to_json())
    assert json.loads(card.to_json())["input"]["resize"] == "shorter"
    assert again.input.resize == "shorter" and again.input.resize_shorter == 256

"""Fine-tuning pieces that need no training: the crops the head is trained on are the pixels served, augmentation
is seeded and keeps the shape, and the flags refuse what cannot work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnserve.card import InputSpec
from cnnserve.errors import ConfigError
from cnnserve.preprocess import to_pixels
from cnnserve.training.config import TrainConfig, config_from_args
from cnnserve.training.efficientnet import imagenet_input
from cnnserve.training.finetune import augment, centre


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (256, 256), (1000, 257)])
def test_the_centre_of_the_256_read_is_what_the_server_feeds_the_model(size: tuple[int, int]) -> None:
    read = InputSpec(channels=3, height=256, width=256, resize="shorter", resize_shorter=256)
    image = photo(*size)
    np.testing.assert_array_equal(
        centre(torch.from_numpy(to_pixels(image, read))).numpy(), to_pixels(image, imagenet_input())
    )


def test_augmentation_is_seeded_and_gives_224_crops() -> None:
    pixels = torch.randint(0, 256, (5, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(model="efficientnet_lite0", pretrained=True, random_resized_crop=True, hflip=True)
    one = augment(pixels, config, torch.Generator().manual_seed(1))
    two = augment(pixels, config, torch.Generator().manual_seed(1))
    assert one.shape == (5, 3, 224, 224) and one.dtype == torch.uint8 and torch.equal(one, two)
    assert not torch.equal(one, centre(pixels))
    plain = augment(pixels, TrainConfig(), torch.Generator())
    assert torch.equal(plain, centre(pixels))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "lenet", "--pretrained"], "for --model efficientnet_lite0 only"),
        (["--unfreeze"], "--unfreeze needs --pretrained"),
        (["--model", "efficientnet_lite0", "--pretrained", "--augment-views", "0"], "--augment-views must be >= 1"),
    ],
)
def test_fine_tuning_flags_that_cannot_work_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args(argv)


def test_data_dir_names_the_image_folder_when_fine_tuning() -> None:
    config, _ = config_from_args(["--model", "efficientnet_lite0", "--pretrained", "--data-dir", "photos"])
    assert str(config.image_folder) == "photos"

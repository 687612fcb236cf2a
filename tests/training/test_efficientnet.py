"""efficientnet_lite0: the package's ImageNet state dict loads into our network tensor for tensor, the labels are
torchvision's (tests/training/test_imagenet.py), and the pretrained network names real photos (skimage's cat and
espresso) in PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnserve.preprocess import normalize, to_pixels
from cnnserve.training.efficientnet import (
    WEIGHTS_FILE,
    efficientnet_lite0,
    imagenet_input,
    pretrained_imagenet,
    weights_path,
)
from cnnserve.training.imagenet import imagenet_labels
from cnnserve.training.models import build_model, count_parameters

REPO = Path(__file__).resolve().parents[2]
CAT = {"tabby", "tiger cat", "Egyptian cat"}
COFFEE = {"espresso", "cup", "coffee mug"}


def photo(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


def test_the_packages_state_dict_loads_strictly_tensor_for_tensor() -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert weights_path().name == WEIGHTS_FILE
    assert len(state) == 296  # 4.69M numbers with BatchNorm's running statistics and counters
    assert sum(t.numel() for t in state.values()) == 4_694_073
    model = build_model("efficientnet_lite0", in_channels=3, num_classes=1000)
    assert count_parameters(model) == 4_652_008
    model.load_state_dict(state, strict=True)
    ours = model.state_dict()
    assert list(ours) == list(state)
    for key, tensor in state.items():
        assert torch.equal(ours[key], tensor), key


def test_a_new_head_keeps_the_backbone_shapes() -> None:
    model = efficientnet_lite0(num_classes=4)
    with torch.inference_mode():
        features = model.eval().features(torch.zeros(2, 3, 224, 224))
        logits = model(torch.zeros(2, 3, 224, 224))
    assert features.shape == (2, 1280) and logits.shape == (2, 4)


def test_pretrained_network_names_the_cat_and_the_espresso() -> None:
    model, card = pretrained_imagenet()
    assert card.input == imagenet_input() and card.labels == imagenet_labels()
    assert card.training["base_weights"]["license"] == "Apache-2.0"
    pixels = np.stack([to_pixels(photo("chelsea.png"), card.input), to_pixels(photo("coffee.png"), card.input)])
    with torch.inference_mode():
        logits = model(torch.from_numpy(normalize(pixels, card.normalization)))
    top5 = [{card.labels[i] for i in row} for row in logits.topk(5).indices.tolist()]
    assert card.labels[int(logits[0].argmax())] in CAT and top5[0] >= CAT
    assert card.labels[int(logits[1].argmax())] == "espresso" and top5[1] >= COFFEE

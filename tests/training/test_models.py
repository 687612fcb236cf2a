"""The model zoo: the seed LeNet layer for layer, its ReLU-head variant, and the BN CNN on any input size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnserve.errors import CheckpointError
from cnnserve.training.models import build_model, count_parameters

# The seed's summary table: each layer of `lenet` and its output shape for one 1x28x28 image.
SEED_LENET_TABLE = [
    (nn.Conv2d, (6, 28, 28)),
    (nn.ReLU, (6, 28, 28)),
    (nn.MaxPool2d, (6, 14, 14)),
    (nn.Conv2d, (16, 10, 10)),
    (nn.ReLU, (16, 10, 10)),
    (nn.MaxPool2d, (16, 5, 5)),
    (nn.Flatten, (400,)),
    (nn.Linear, (120,)),
    (nn.Linear, (84,)),
    (nn.Linear, (10,)),
]


def layer_shapes(model: nn.Sequential, x: torch.Tensor) -> list[tuple[type[nn.Module], tuple[int, ...]]]:
    shapes = []
    for layer in model:
        x = layer(x)
        shapes.append((type(layer), tuple(x.shape[1:])))
    return shapes


def test_lenet_is_the_seed_network_layer_for_layer() -> None:
    model = build_model("lenet")
    assert count_parameters(model) == 61_610
    assert isinstance(model, nn.Sequential)
    assert layer_shapes(model, torch.zeros(1, 1, 28, 28)) == SEED_LENET_TABLE


def test_lenet_relu_adds_activations_between_linear_layers_only() -> None:
    model = build_model("lenet_relu")
    assert count_parameters(model) == 61_610
    kinds = [type(layer) for layer in model]
    assert kinds[kinds.index(nn.Flatten) :] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [shape for _, shape in layer_shapes(model, torch.zeros(1, 1, 28, 28))][-1] == (10,)


@pytest.mark.parametrize("height, width", [(28, 28), (37, 53), (96, 64)])
def test_cnn_bn_takes_three_channel_input_of_any_size(height: int, width: int) -> None:
    model = build_model("cnn_bn", in_channels=3, num_classes=5, width=8, hidden=16).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, height, width))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()


def test_cnn_bn_in_eval_mode_is_deterministic_despite_dropout() -> None:
    model = build_model("cnn_bn", width=8).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_unknown_architecture_and_bad_arguments_are_checkpoint_errors() -> None:
    with pytest.raises(CheckpointError, match=r"unknown architecture 'resnet'; expected one of: lenet"):
        build_model("resnet")
    with pytest.raises(CheckpointError, match=r"bad arguments for architecture 'lenet'"):
        build_model("lenet", width=3)

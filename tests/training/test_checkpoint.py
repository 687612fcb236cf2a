"""training/checkpoint.py: weights and card come back exactly; anything else is one CheckpointError saying why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import CheckpointError
from cnnserve.training.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from cnnserve.training.models import build_model

ARCH_ARGS = {"in_channels": 1, "num_classes": 3}
CARD = ModelCard(
    name="tiny",
    architecture="lenet",
    input=InputSpec(),
    labels=("a", "b", "c"),
    normalization=Normalization((0.5,), (0.25,)),
    arch_args=ARCH_ARGS,
)


def test_weights_and_card_round_trip_and_the_model_is_in_eval_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet", **ARCH_ARGS)
    path = tmp_path / "sub" / "tiny.pt"  # the folder is created
    save_checkpoint(path, model, CARD)
    loaded, card = load_checkpoint(path, architecture="lenet")
    assert card == CARD and not loaded.training
    for (name, want), (_, got) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(want, got), name
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["tiny.pt"]  # no temporary file left


def test_another_architecture_is_refused_naming_both(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tiny.pt", build_model("lenet", **ARCH_ARGS), CARD)
    with pytest.raises(CheckpointError, match="holds a 'lenet' model, but 'cnn_bn' was expected"):
        load_checkpoint(tmp_path / "tiny.pt", architecture="cnn_bn")


def test_foreign_and_mismatched_files_say_what_was_expected(tmp_path: Path) -> None:
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=f"is not a cnnserve checkpoint \\(expected format '{FORMAT}'\\)"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": FORMAT, "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"format_version 99 is not supported \(expected 1\)"):
        load_checkpoint(tmp_path / "future.pt")
    # A card whose arch_args do not match the weights: the network is rebuilt, the weights do not fit.
    save_checkpoint(tmp_path / "wide.pt", build_model("cnn_bn", in_channels=1, num_classes=3), CARD)
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'lenet'"):
        load_checkpoint(tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")

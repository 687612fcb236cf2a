"""cnnserve/card.py: a model card survives JSON unchanged, and a wrong one is refused with what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import ModelCardError

LABELS = ("cat", "dog", "bird")


def rgb_card(**changes: Any) -> ModelCard:
    card = ModelCard(
        name="pets",
        architecture="cnn_bn",
        input=InputSpec(channels=3, height=32, width=48, resize="shorter", resize_shorter=64),
        labels=LABELS,
        normalization=Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), in_graph=True),
        arch_args={"in_channels": 3, "num_classes": 3, "width": 16},
        training={"test_accuracy": 0.75, "epochs": 2},
        opset=20,
        sha256="ab" * 32,
    )
    return card.evolve(**changes)


def test_json_round_trip_keeps_every_field(tmp_path: Path) -> None:
    card = rgb_card()
    assert ModelCard.from_json(card.to_json()) == card
    card.save(tmp_path / "model.json")
    loaded = ModelCard.load(tmp_path / "model.json")
    assert loaded == card
    assert (loaded.input.shape, loaded.num_classes) == ((3, 32, 48), 3)
    assert json.loads(card.to_json())["input"]["resize_shorter"] == 64


def test_an_older_card_without_newer_fields_still_loads() -> None:
    data = rgb_card().to_dict()
    del data["input"]["resize"], data["input"]["resize_shorter"], data["output"], data["normalization"]["in_graph"]
    data["input"] |= {"channels": 3}
    data["unknown_future_field"] = 1  # ignored, not refused
    card = ModelCard.from_dict(data)
    assert (card.input.resize, card.input.resize_shorter, card.normalization.in_graph) == ("stretch", None, False)


def test_evolve_returns_a_changed_copy() -> None:
    card = rgb_card()
    newer = card.evolve(version=2, sha256=None)
    assert (newer.version, newer.sha256, card.version, card.sha256) == (2, None, 1, "ab" * 32)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: InputSpec(channels=2), r"input.channels must be 1 \(grayscale\) or 3 \(RGB\), got 2"),
        (lambda: InputSpec(height=0), "input.height and input.width must be positive, got 0x28"),
        (lambda: InputSpec(resize="shorter"), "input.resize 'shorter' needs input.resize_shorter >= 28"),
        (lambda: InputSpec(resize_shorter=30), "input.resize_shorter is set but input.resize is 'stretch'"),
        (lambda: Normalization(mean=(0.5,), std=(0.2, 0.2)), "must be non-empty and of equal length, got 1 and 2"),
        (lambda: Normalization(mean=(0.5,), std=(0.0,)), r"normalization.std must be positive, got \[0.0\]"),
        (lambda: rgb_card(name="a/b"), "name must be a non-empty path-safe string"),
        (lambda: rgb_card(version=0), "version must be a positive integer, got 0"),
        (lambda: rgb_card(labels=("one",)), "labels must name at least 2 classes"),
        (lambda: rgb_card(input=InputSpec()), r"normalization has 3 channel\(s\) but the input has 1"),
        (lambda: rgb_card(schema_version=99), "schema_version 99 is not supported"),
    ],
)
def test_a_wrong_card_says_what_was_expected(make: Any, message: str) -> None:
    with pytest.raises(ModelCardError, match=message):
        make()


def test_unreadable_and_malformed_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match=r"cannot read model card .*missing\.json"):
        ModelCard.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelCardError, match=r"bad.json: model card is not valid JSON"):
        ModelCard.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ModelCardError, match="must be a JSON object, got list"):
        ModelCard.load(tmp_path / "list.json")
    with pytest.raises(ModelCardError, match="malformed model card: KeyError"):
        ModelCard.from_dict({"name": "x"})

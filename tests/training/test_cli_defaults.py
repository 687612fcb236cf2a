"""What `cnnserve train` and `cnnserve export` say and do by default: the epochs that really run, help without
"(default: None)", the export's name and its real parity images taken from the checkpoint's card."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from cnnserve.export.cli import main as export_main
from cnnserve.process import EXIT_OK
from cnnserve.training.config import build_parser
from cnnserve.training.train import main as train_main


def test_max_steps_logs_the_epochs_that_will_run(
    tmp_path: Path, tiny_idx_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 256 training images of batch 128 are 2 steps per epoch: 3 steps are 2 of the 15 default epochs.
    out = tmp_path / "ckpt.pt"
    argv = ["--data-dir", str(tiny_idx_dir), "--model", "lenet_relu", "--max-steps", "3", "--out", str(out)]
    with caplog.at_level(logging.INFO, logger="cnnserve.training.train"):
        assert train_main(argv) == EXIT_OK
    epochs = [m for m in caplog.messages if m.startswith("epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1/2", "epoch 2/2"], caplog.messages


def test_train_help_states_each_default_once() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "(default: None)" not in text
    assert "model name in the card (default the stem of --out) " in text + " "
    assert "passes over the training set (default 15)" in text


@pytest.mark.slow  # three exports with parity checks: about 15 s
def test_export_defaults_to_the_cards_name_and_its_real_test_images(tmp_path: Path, tiny_idx_dir: Path) -> None:
    checkpoint = tmp_path / "ckpt" / "shoes.pt"
    argv = ["--data-dir", str(tiny_idx_dir), "--max-steps", "1", "--out", str(checkpoint), "-q"]
    assert train_main(argv) == EXIT_OK
    repository = tmp_path / "models"

    assert export_main([str(checkpoint), "--repository", str(repository)]) == EXIT_OK  # no --name
    card = json.loads((repository / "shoes" / "1" / "model.json").read_text())
    assert card["name"] == "shoes"
    real = card["parity"]["real_images"]
    assert real["count"] == 64 and str(tiny_idx_dir) in real["source"]
    assert {case["inputs"] for case in card["parity"]["cases"]} == {"random", "real"}

    assert export_main([str(checkpoint), "--repository", str(repository), "--parity-data", "none"]) == EXIT_OK
    assert json.loads((repository / "shoes" / "2" / "model.json").read_text())["parity"]["real_images"] is None

    shutil.rmtree(tiny_idx_dir)  # trained here, checked elsewhere: random pixels, and a warning saying so
    assert export_main([str(checkpoint), "--repository", str(repository), "--name", "moved"]) == EXIT_OK
    assert json.loads((repository / "moved" / "1" / "model.json").read_text())["parity"]["real_images"] is None

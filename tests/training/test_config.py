"""training/config.py: `cnnserve train`'s flags and variables build the TrainConfig its fields declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.errors import ConfigError
from cnnserve.training.config import TrainConfig, build_parser, config_from_args
from cnnserve.training.data import DEFAULT_DATA_DIR


def test_no_flags_give_the_dataclass_defaults() -> None:
    config, quiet = config_from_args([], environ={})
    assert config == TrainConfig() and not quiet
    assert (config.data_dir, config.height, config.width, config.arch_args) == (DEFAULT_DATA_DIR, 28, 28, {})


def test_flags_named_otherwise_than_their_fields() -> None:
    argv = ["--image-size", "32x24", "--crop-padding", "2", "--arch-arg", "width=48", "--arch-arg", "act=relu", "-q"]
    config, quiet = config_from_args([*argv, "--pretrained", "--model", "efficientnet_lite0"], environ={})
    assert (config.height, config.width, config.crop_padding_px) == (32, 24, 2)
    assert config.arch_args == {"width": 48, "act": "relu"}
    assert config.image_folder == DEFAULT_DATA_DIR  # --pretrained trains on --data-dir's class folders
    assert quiet
    assert config_from_args(["--image-size", "64"], environ={})[0].height == 64


def test_only_three_variables_are_read() -> None:
    environ = {"CNNSERVE_DATA_DIR": "/data", "CNNSERVE_THREADS": "2", "CNNSERVE_SEED": "7", "CNNSERVE_EPOCHS": "1"}
    config, _ = config_from_args([], environ=environ)
    assert (config.data_dir, config.threads, config.seed, config.epochs) == (Path("/data"), 2, 7, 15)
    assert config_from_args(["--seed", "3"], environ=environ)[0].seed == 3  # the flag wins
    with pytest.raises(ConfigError, match="CNNSERVE_SEED='x' is not valid"):
        config_from_args([], environ={"CNNSERVE_SEED": "x"})


def test_help_shows_every_default() -> None:
    text = " ".join(build_parser().format_help().split())
    shown = ["(default 28x28)", "(default lenet)", "(default checkpoints/model.pt)", "(default one per core)",
             "(default on for cnn_bn)", "(default 0.25)", "[env CNNSERVE_DATA_DIR]", "[env CNNSERVE_SEED]"]  # fmt: skip
    assert [part for part in shown if part not in text] == []
    assert text.count("[env ") == 3

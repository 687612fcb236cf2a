"""export/config.py: ExportConfig's fields are `cnnserve export`'s flags; bad values are refused at construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.errors import ConfigError
from cnnserve.export.cli import build_parser
from cnnserve.export.config import DEFAULT_OPSET, ExportConfig
from cnnserve.options import option_values


def config_of(argv: list[str], environ: dict[str, str] | None = None) -> ExportConfig:
    return ExportConfig(**option_values(ExportConfig, build_parser().parse_args(argv), environ or {}))


def test_flags_and_the_repository_variable() -> None:
    config = config_of(["ckpt.pt"])
    assert (config.checkpoint, config.repository, config.parity_data, config.opset) == (
        Path("ckpt.pt"), Path("models"), "card", DEFAULT_OPSET)  # fmt: skip
    environ = {"CNNSERVE_MODEL_REPOSITORY": "/srv/models", "CNNSERVE_REPOSITORY": "/nope", "CNNSERVE_OPSET": "17"}
    assert config_of(["ckpt.pt"], environ).repository == Path("/srv/models")
    assert config_of(["ckpt.pt"], environ).opset == DEFAULT_OPSET  # only --repository reads a variable
    assert config_of(["ckpt.pt", "--repository", "here"], environ).repository == Path("here")
    assert config_of(["ckpt.pt", "--parity-data", "none"]).parity_data is None
    assert config_of(["ckpt.pt", "--parity-data", "/data"]).parity_data == Path("/data")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give either a CHECKPOINT or --pretrained ARCH"),
        (["c.pt", "--pretrained", "efficientnet_lite0"], "give either a CHECKPOINT or --pretrained ARCH"),
        (["c.pt", "--opset", "16"], "--opset must be between 17 and 25, got 16"),
        (["c.pt", "--version", "0"], "--version must be a positive integer, got 0"),
        (["c.pt", "--name", "a/b"], "--name must be a path-safe model name"),
        (["c.pt", "--parity-atol", "0"], "--parity-atol must be a positive number, got 0.0"),
        (["c.pt", "--parity-limit", "0"], "--parity-limit must be a positive integer, got 0"),
    ],
)
def test_bad_values_say_what_was_expected(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config_of(argv)

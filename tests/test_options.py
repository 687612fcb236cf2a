"""cnnserve.options: one declaration per option gives its flag, its variable and the default --help shows."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnnserve.errors import ConfigError
from cnnserve.options import add_options, option, option_values


def _names(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


@dataclass(frozen=True, slots=True)
class Example:
    folder: Path = option(help="where things are", convert=Path)
    port: int = option(8001, help="a port")
    ratio: float = option(0.5, help="a ratio", group="tuning")
    name: str | None = option(None, help="a name", convert=str, default_text="the folder's")
    eager: bool = option(True, help="go at once", kind="switch")
    quiet: bool = option(False, help="say less", kind="switch", env=False)
    tags: tuple[str, ...] = option((), help="a tag; repeat it", kind="repeat", convert=_names)
    mode: str = option("fast", help="how", choices=("fast", "slow"), flag="--how")


def parse(argv: list[str], environ: dict[str, str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_options(parser, Example, {"tuning": parser.add_argument_group("tuning")})
    return option_values(Example, parser.parse_args(argv), environ or {})


def test_flags_win_over_variables_which_win_over_defaults() -> None:
    assert parse([]) == {}
    environ = {"CNNSERVE_PORT": "9000", "CNNSERVE_RATIO": "0.25", "CNNSERVE_EAGER": "off", "CNNSERVE_NAME": ""}
    assert parse([], environ) == {"port": 9000, "ratio": 0.25, "eager": False}  # NAME= counts as unset
    assert parse(["--port", "7000", "--eager"], environ) == {"port": 7000, "ratio": 0.25, "eager": True}
    config = Example(**parse(["--folder", "models", "--no-eager", "--how", "slow"]))  # type: ignore[arg-type]
    assert (config.folder, config.eager, config.mode, config.port) == (Path("models"), False, "slow", 8001)


def test_repeated_flags_extend_and_the_variable_takes_a_list() -> None:
    assert parse(["--tags", "a,b", "--tags", "c"]) == {"tags": ("a", "b", "c")}
    assert parse([], {"CNNSERVE_TAGS": "x,y"}) == {"tags": ("x", "y")}


def test_an_option_without_env_ignores_its_variable() -> None:
    assert parse([], {"CNNSERVE_QUIET": "1"}) == {}
    assert parse(["--quiet"]) == {"quiet": True}


def test_a_bad_variable_names_itself_and_what_was_expected() -> None:
    with pytest.raises(ConfigError, match=r"CNNSERVE_PORT='eighty' is not valid: invalid literal for int"):
        parse([], {"CNNSERVE_PORT": "eighty"})
    with pytest.raises(ConfigError, match="CNNSERVE_EAGER='maybe' is not valid: expected one of 1/0, true/false"):
        parse([], {"CNNSERVE_EAGER": "maybe"})


def test_help_shows_each_default_once_from_the_declaration() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, Example)
    actions = {action.dest: action.help for action in parser._actions}
    assert actions["port"] == "a port (default 8001) [env CNNSERVE_PORT]"
    assert actions["name"] == "a name (default the folder's) [env CNNSERVE_NAME]"
    assert actions["eager"] == "go at once (default on) [env CNNSERVE_EAGER]"
    assert actions["quiet"] == "say less"
    assert actions["folder"] == "where things are [env CNNSERVE_FOLDER]"
    assert actions["tags"] == "a tag; repeat it [env CNNSERVE_TAGS]"


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width)


def _maybe_path(text: str) -> Path | None:
    return None if text == "none" else Path(text)


@dataclass(frozen=True, slots=True)
class Shaped:
    source: Path | None = option(None, help="what to read", kind="positional", convert=Path, env=False)
    store: Path = option(Path("models"), help="where to write", env="CNNSERVE_MODEL_REPOSITORY")
    height: int = option(28, help="image size", flag="--size", convert=_size, spread=("height", "width"), env=False)
    width: int = 28
    padding_px: int = option(0, help="padding", flag="--padding", env=False)
    force: bool = option(False, help="overwrite", kind="store_true", env=False)
    extra: Path | None = option(Path("x"), help="more data", convert=_maybe_path, env=False)


def parse_shaped(argv: list[str], environ: dict[str, str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_options(parser, Shaped)
    return option_values(Shaped, parser.parse_args(argv), environ or {})


def test_a_variable_may_be_named_otherwise_than_its_field() -> None:
    environ = {"CNNSERVE_MODEL_REPOSITORY": "/srv/models", "CNNSERVE_STORE": "/elsewhere", "CNNSERVE_HEIGHT": "9"}
    assert parse_shaped([], environ) == {"store": Path("/srv/models")}
    assert parse_shaped(["--store", "here"], environ) == {"store": Path("here")}
    parser = argparse.ArgumentParser()
    add_options(parser, Shaped)
    helps = {action.dest: action.help for action in parser._actions}
    assert helps["store"] == "where to write (default models) [env CNNSERVE_MODEL_REPOSITORY]"


def test_one_flag_may_set_two_fields_and_a_flag_may_be_named_otherwise() -> None:
    assert parse_shaped(["--size", "32x48", "--padding", "2"]) == {"height": 32, "width": 48, "padding_px": 2}
    config = Shaped(**parse_shaped(["--size", "7x5"]))  # type: ignore[arg-type]
    assert (config.height, config.width) == (7, 5)


def test_positional_store_true_and_a_flag_whose_value_is_none() -> None:
    assert parse_shaped([]) == {}
    assert parse_shaped(["ckpt.pt", "--force"]) == {"source": Path("ckpt.pt"), "force": True}
    assert parse_shaped(["--extra", "none"]) == {"extra": None}  # set to None, not unset
    with pytest.raises(SystemExit):
        parse_shaped(["--no-force"])  # store_true has no --no- form

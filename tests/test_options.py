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

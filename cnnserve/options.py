"""Options declared once: a config dataclass field carries its flag's help, and the flag, its CNNSERVE_* variable
and the default that --help shows all come from that one declaration.

    @dataclass(frozen=True, slots=True)
    class Config:
        port: int = option(8001, help="gRPC port; 0 picks a free one")

    add_options(parser, Config)                      # --port, help "gRPC port; 0 picks a free one (default 8001)
                                                     #   [env CNNSERVE_PORT]"
    Config(**option_values(Config, parser.parse_args()))   # flag > CNNSERVE_PORT > the field's default

A flag on the command line wins over its variable, the variable over the field's default; a variable set to the
empty string counts as unset (compose and .env files write `NAME=` for "no value"). An unset flag leaves no
attribute in argparse's namespace (default SUPPRESS), so it falls through, and a flag may still mean None
(`--parity-data none`); --help prints the field's default itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal

from cnnserve.errors import ConfigError

ENV_PREFIX = "CNNSERVE_"
_KEY = "cnnserve.option"

Kind = Literal["value", "switch", "store_true", "repeat", "positional"]


@dataclass(frozen=True, slots=True)
class Option:
    """How one config field is set from the command line and the environment."""

    help: str
    #: text -> value, for the flag and the variable; None: the type of the field's default (str, int, float, Path)
    convert: Callable[[str], Any] | None = None
    #: value: --flag VALUE; switch: --flag / --no-flag (and 1/0, true/false, yes/no, on/off in the variable);
    #: store_true: --flag alone turns it on (no --no-flag); repeat: --flag VALUE given any number of times, each
    #: value a tuple to extend with (the variable: one value); positional: an optional positional argument
    kind: Kind = "value"
    flag: str | None = None  # None: the field name in kebab-case
    #: True: read CNNSERVE_<FIELD> too; False: no variable; a string: the variable's name
    env: bool | str = True
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    #: what --help says the default is; None: the field's default itself; "": say nothing
    default_text: str | None = None
    group: str | None = None  # the argparse group title to list it under (add_options' `groups`)
    #: the converted value is a tuple that sets these fields, in order (--image-size HxW: height, width); the
    #: option is declared on the first of them
    spread: tuple[str, ...] = ()


def option(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, **how: Any) -> Any:
    """A dataclass field that is also an option (the keywords after `help` are Option's)."""
    metadata = {_KEY: Option(help=help, **how)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def options(config_type: type) -> Iterator[tuple[dataclasses.Field[Any], Option]]:
    """The fields of `config_type` declared with option(), in declaration order."""
    for field in dataclasses.fields(config_type):
        declared = field.metadata.get(_KEY)
        if declared is not None:
            yield field, declared


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def variable_of(field_name: str, declared: Option) -> str | None:
    """The environment variable an option reads, or None."""
    if isinstance(declared.env, str):
        return declared.env
    return env_name(field_name) if declared.env else None


def flag_of(field_name: str, declared: Option) -> str:
    return declared.flag or "--" + field_name.replace("_", "-")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected one of 1/0, true/false, yes/no, on/off, got {text!r}")


def add_options(
    parser: argparse.ArgumentParser,
    config_type: type,
    groups: Mapping[str, argparse._ArgumentGroup] | None = None,
) -> None:
    """Declare one flag per option() field of `config_type`; an unset flag leaves no attribute (SUPPRESS)."""
    for field, declared in options(config_type):
        target: Any = (groups or {}).get(declared.group or "", parser)
        help_text = declared.help + _default_note(field, declared)
        variable = variable_of(field.name, declared)
        if variable is not None:
            help_text += f" [env {variable}]"
        if declared.kind == "positional":  # argparse gives an absent positional its default: None, unset
            target.add_argument(
                field.name, nargs="?", type=_converter(field, declared), metavar=declared.metavar, help=help_text
            )
            continue
        flag = flag_of(field.name, declared)
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if declared.kind == "switch":
            target.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if declared.kind == "store_true":
            target.add_argument(flag, action="store_true", **kwargs)
            continue
        kwargs["type"] = _converter(field, declared)
        if declared.kind == "repeat":
            kwargs["action"] = "extend"
        if declared.choices is not None:
            kwargs["choices"] = declared.choices
        if declared.metavar is not None:
            kwargs["metavar"] = declared.metavar
        target.add_argument(flag, **kwargs)


def option_values(
    config_type: type, args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The option() fields set by a flag or, failing that, a variable: keyword arguments for `config_type`."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field, declared in options(config_type):
        variable = variable_of(field.name, declared)
        if hasattr(args, field.name) and not (declared.kind == "positional" and getattr(args, field.name) is None):
            value = getattr(args, field.name)
            value = tuple(value) if declared.kind == "repeat" else value
        elif variable is not None and environ.get(variable, "") != "":
            text = environ[variable]
            try:
                value = (
                    parse_bool(text) if declared.kind in ("switch", "store_true") else _converter(field, declared)(text)
                )
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ConfigError(f"{variable}={text!r} is not valid: {exc}") from exc
        else:
            continue
        if declared.spread:
            values.update(zip(declared.spread, value, strict=True))
        else:
            values[field.name] = value
    return values


def _converter(field: dataclasses.Field[Any], declared: Option) -> Callable[[str], Any]:
    if declared.convert is not None:
        return declared.convert
    if isinstance(field.default, (str, int, float, Path)) and not isinstance(field.default, bool):
        return type(field.default)
    raise TypeError(f"option {field.name!r}: give convert= (its default {field.default!r} names no type)")


def _default_note(field: dataclasses.Field[Any], declared: Option) -> str:
    if declared.default_text is not None:
        return f" (default {declared.default_text})" if declared.default_text else ""
    default = field.default
    if default is MISSING or default is None or (declared.kind in ("switch", "store_true") and default is False):
        return ""
    if declared.kind in ("switch", "store_true"):
        return " (default on)"
    if isinstance(default, tuple):
        return f" (default {','.join(map(str, default))})" if default else ""
    return f" (default {default})"

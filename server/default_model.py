"""The default model: which model answers a request that names none, and the message when there is none.

In order: `--default-model` (CNNSERVE_DEFAULT_MODEL); else the model named in the repository's `default` file
(one line, beside the model folders); else the repository's only model; else none, and requests must name one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from cnnserve.server.errors import StartupError

#: `<repository>/default`: a text file holding the name of the model that answers requests naming none.
DEFAULT_FILE = "default"


def read_default_file(root: Path) -> str | None:
    """The model named in `<root>/default`, or None when there is no such file. StartupError when it is unreadable
    or holds anything but one model name (blank lines and `#` comments aside)."""
    path = root / DEFAULT_FILE
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read {path}: {exc}; expected one line naming the default model") from exc
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(names) != 1 or "/" in names[0]:
        raise StartupError(f"{path} must hold one model name (a folder of {root}), got {names}")
    return names[0]


def choose(flag: str | None, from_file: str | None, models: Collection[str]) -> str | None:
    """The default model's name, or None when requests must name one."""
    if flag is not None:
        return flag
    if from_file is not None:
        return from_file
    if len(models) == 1:
        return next(iter(models))
    return None


def check(flag: str | None, from_file: str | None, models: Collection[str], root: Path) -> None:
    """StartupError when the flag or the `default` file names a model the repository does not have."""
    have = ", ".join(sorted(models))
    if flag is not None and flag not in models:
        raise StartupError(f"--default-model {flag!r} is not in {root}; it has: {have}")
    if flag is None and from_file is not None and from_file not in models:
        raise StartupError(f"{root / DEFAULT_FILE} names {from_file!r}, which is not in {root}; it has: {have}")


def missing_message(ready: Iterable[str]) -> str:
    """What a request naming no model is told when there is no default."""
    names = ", ".join(sorted(set(ready))) or "none"
    return (
        "no model named and no default model set (--default-model, or a `default` file in the model repository); "
        f"name one of the ready models: {names}"
    )

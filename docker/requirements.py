"""Print the requirements of cnnserve's base install plus the named extras, one per line, from pyproject.toml.

Used twice with one meaning: by make-wheelhouse.sh on the host (what to download) and inside the image builds (what
to install in the dependency layer, before the source is copied, so a source edit does not re-install them).
Standard library only: it runs on a bare python3 >= 3.11 (tomllib).

    python3 docker/requirements.py pyproject.toml server cpu
    python3 docker/requirements.py --build-system pyproject.toml     # the build backend (setuptools) as well
"""

from __future__ import annotations

import sys
import tomllib
from typing import Any


def requirements(pyproject: dict[str, Any], extras: list[str], *, build_system: bool) -> list[str]:
    """The requirement strings, build backend first when asked, each once, in pyproject.toml's order."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:
        raise SystemExit(f"requirements.py: no extra {unknown} in pyproject.toml; expected some of {sorted(optional)}")
    found = list(pyproject["build-system"]["requires"]) if build_system else []
    found += project.get("dependencies", [])
    for name in extras:
        found += optional[name]
    return list(dict.fromkeys(found))  # drop repeats (grpcio is in both server and client), keep the order


def main(argv: list[str]) -> int:
    build_system = "--build-system" in argv
    args = [arg for arg in argv if arg != "--build-system"]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], "rb") as file:
        pyproject = tomllib.load(file)
    extras = [name for arg in args[1:] for name in arg.split(",") if name]  # "server cpu" or "server,cpu"
    print("\n".join(requirements(pyproject, extras, build_system=build_system)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

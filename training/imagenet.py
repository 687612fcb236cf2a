"""The 1,000 ImageNet class names: read from torchvision's package metadata, kept as a generated text file.

`imagenet_labels.txt` beside this module is generated, never edited: `make labels`
rewrites it from `torchvision/models/_meta.py` inside a torchvision wheel (or an installed torchvision), read as
text and parsed with `ast`, never imported (torchvision from the registry does not import beside the CPU torch).
A test regenerates it from the wheel the dev set-up downloads and fails on a difference.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from collections.abc import Sequence
from functools import cache
from importlib import metadata, resources
from pathlib import Path

from cnnserve.errors import DataError

META_PATH = "torchvision/models/_meta.py"
META_NAME = "_IMAGENET_CATEGORIES"
LABELS_FILE = "imagenet_labels.txt"
NUM_CLASSES = 1000


def parse_categories(source: str, where: str) -> tuple[str, ...]:
    """The list literal assigned to `_IMAGENET_CATEGORIES` in the text of torchvision's `_meta.py`."""
    for node in ast.parse(source, filename=where).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == META_NAME for t in node.targets):
            names = ast.literal_eval(node.value)
            if not (isinstance(names, list) and len(names) == NUM_CLASSES and all(isinstance(n, str) for n in names)):
                raise DataError(f"{where}: {META_NAME} is not a list of {NUM_CLASSES} strings")
            return tuple(names)
    raise DataError(f"{where}: no {META_NAME} assignment; expected torchvision's model metadata")


def read_torchvision_meta(wheel: Path | None = None) -> tuple[str, ...]:
    """The categories from a torchvision wheel file, or else from an installed torchvision distribution."""
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                text = archive.read(META_PATH).decode("utf-8")
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{wheel}: cannot read {META_PATH} ({exc}); expected a torchvision wheel") from exc
        return parse_categories(text, f"{wheel}!{META_PATH}")
    try:
        path = Path(str(metadata.distribution("torchvision").locate_file(META_PATH)))
    except metadata.PackageNotFoundError:
        raise DataError("torchvision is not installed; pass a torchvision wheel file instead") from None
    return parse_categories(path.read_text(encoding="utf-8"), str(path))


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 class names in ImageNet's index order, from the generated file shipped with the package."""
    text = resources.files(__package__ or "cnnserve.training").joinpath(LABELS_FILE).read_text(encoding="utf-8")
    labels = tuple(text.splitlines())
    if len(labels) != NUM_CLASSES:
        raise DataError(f"{LABELS_FILE} holds {len(labels)} names; expected {NUM_CLASSES} (regenerate it)")
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate imagenet_labels.txt from the torchvision wheel given (or the installed torchvision)."""
    args = list(sys.argv[1:] if argv is None else argv)
    labels = read_torchvision_meta(Path(args[0]) if args else None)
    out = Path(__file__).with_name(LABELS_FILE)
    out.write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(labels)} labels")
    return 0

"""training/imagenet.py: the shipped ImageNet labels are torchvision's metadata; other metadata is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.errors import DataError
from cnnserve.training.imagenet import LABELS_FILE, imagenet_labels, parse_categories, read_torchvision_meta

REPO = Path(__file__).resolve().parents[2]


def test_labels_are_torchvisions_metadata() -> None:
    wheels = sorted((REPO / ".cache" / "wheels").glob("torchvision-*.whl"))
    if not wheels:
        pytest.fail("no torchvision wheel in .cache/wheels: `make env-dev` downloads it (never installed)")
    labels = imagenet_labels()
    assert labels == read_torchvision_meta(wheels[-1]), f"{LABELS_FILE} is stale: run `make labels`"
    assert len(labels) == 1000 and labels[0] == "tench" and labels[281] == "tabby" and labels[967] == "espresso"


def test_metadata_that_is_not_torchvisions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no _IMAGENET_CATEGORIES"):
        parse_categories("x = 1\n", "meta.py")
    with pytest.raises(DataError, match="not a list of 1000 strings"):
        parse_categories("_IMAGENET_CATEGORIES = ['a', 'b']\n", "meta.py")
    (tmp_path / "not.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="expected a torchvision wheel"):
        read_torchvision_meta(tmp_path / "not.whl")

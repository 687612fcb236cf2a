"""One classify() call's plan (cnnserve.client.plan): real image files grouped into requests under the message
limit, and on_error deciding between raising for the first failure and returning every result."""

from __future__ import annotations

import pytest

from cnnserve.client import errors as E
from cnnserve.client.config import ClientConfig
from cnnserve.client.plan import finish, plan
from cnnserve.client.results import Classification, Prediction

from .conftest import FashionTree


def test_files_are_read_and_grouped_under_the_limits(fashion_tree: FashionTree) -> None:
    paths = [str(p) for p in fashion_tree.paths[:10]]
    groups = plan(paths, ClientConfig(max_images_per_request=4), "raise")
    assert [len(g) for g in groups] == [4, 4, 2]
    assert [item.id for g in groups for item in g] == paths
    assert groups[0][0].encoded == fashion_tree.paths[0].read_bytes()


def test_a_missing_file_raises_or_travels_as_an_error_item(fashion_tree: FashionTree) -> None:
    paths = [str(fashion_tree.paths[0]), "missing.png"]
    with pytest.raises(E.InvalidArgument, match=r"missing\.png"):
        plan(paths, ClientConfig(), "raise")
    [group] = plan(paths, ClientConfig(), "return")
    assert group[1].error.startswith("INVALID_ARGUMENT: cannot read image file missing.png")


def test_finish_raises_for_the_first_failure_unless_asked_to_return() -> None:
    good = Classification("a.png", (Prediction("Bag", 8, 0.9),), "m", 1)
    bad = Classification("b.png", (), "m", 1, error="INVALID_ARGUMENT: cannot decode image")
    assert finish([good, bad], "return") == [good, bad]
    with pytest.raises(E.InvalidArgument, match=r"1 of 2 images could not be classified; first: b.png"):
        finish([good, bad], "raise")
    assert finish([good], "raise") == [good]

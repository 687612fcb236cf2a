"""`cnnserve classify --local` (cnnserve.client.classify.local): the model version a path names, and the same
answer as the server's Classify for the same files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cnnserve.client import Client
from cnnserve.client.classify.local import LocalClassifier, resolve_version
from cnnserve.errors import ConfigError
from cnnserve.server.app import RunningServer

from ..conftest import FashionModel, FashionTree


def test_a_model_folder_names_its_highest_version(fashion_model: FashionModel, tmp_path: Path) -> None:
    for version in ("1", "3", "12"):
        shutil.copytree(fashion_model.folder, tmp_path / "m" / version)
    (tmp_path / "m" / "99").mkdir()  # no model.onnx: not a version
    assert resolve_version(tmp_path / "m") == tmp_path / "m" / "12"
    assert resolve_version(tmp_path / "m" / "3") == tmp_path / "m" / "3"
    with pytest.raises(ConfigError, match="no model here"):
        resolve_version(tmp_path / "nothing")


def test_local_answers_are_the_servers(
    running_server: RunningServer, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    paths = [str(p) for p in fashion_tree.paths[:6]] + ["missing.png"]
    local = LocalClassifier(fashion_model.folder)
    mine = local.classify(paths, top_k=3)
    with Client(running_server.address) as client:
        served = client.classify(paths, model=fashion_model.name, top_k=3, on_error="return")
    assert [(r.id, r.top, r.error) for r in mine] == [(r.id, r.top, r.error) for r in served]
    assert len(local.classify(paths[:1])[0].top) == 5  # top_k unset: the server's default

"""`cnnserve classify --local` writes the rows the server's answers give, corrupt and missing files included."""

from __future__ import annotations

import shutil
from pathlib import Path

from cnnserve.client.classify.batch import main
from cnnserve.process import EXIT_FAILURE
from cnnserve.server.app import RunningServer

from ..conftest import FashionModel, FashionTree


def test_error_rows_are_the_same_locally_and_through_the_server_whatever_the_batching(
    running_server: RunningServer, fashion_model: FashionModel, fashion_tree: FashionTree, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, path in enumerate(fashion_tree.paths[:3]):
        shutil.copy(path, folder / f"{i}-good.png")
    (folder / "1-truncated.png").write_bytes(fashion_tree.paths[0].read_bytes()[:60])
    (folder / "2-not-an-image.png").write_bytes(b"these bytes are no image at all")
    listed = tmp_path / "more.txt"
    listed.write_text(f"{folder / 'missing.png'}\n{folder / '0-good.png'}\n")
    inputs = [str(folder), f"@{listed}", "--top-k", "3", "-q"]

    outputs = {}
    for how, flags in {
        "server, one request": ["--server", running_server.address, "--model", fashion_model.name],
        "server, two per request": ["--server", running_server.address, "--model", fashion_model.name,
                                    "--batch-size", "2"],
        "local": ["--local", str(fashion_model.folder)],
    }.items():  # fmt: skip
        out = tmp_path / f"{how}.csv"
        assert main([*inputs, *flags, "--output", str(out)]) == EXIT_FAILURE  # some inputs failed
        outputs[how] = out.read_text()
    rows = outputs["local"].splitlines()
    errors = {line.split(",")[0].rsplit("/", 1)[-1]: line.rsplit(",", 1)[-1] for line in rows[1:]}
    assert errors["1-truncated.png"].startswith("INVALID_ARGUMENT: cannot decode image (60 bytes)"), errors
    assert errors["2-not-an-image.png"].startswith("INVALID_ARGUMENT: cannot decode image"), errors
    assert errors["missing.png"].startswith("INVALID_ARGUMENT: cannot read image file"), errors
    assert errors["0-good.png"] == ""
    assert outputs["server, one request"] == outputs["local"]
    assert outputs["server, two per request"] == outputs["local"]

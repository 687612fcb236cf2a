"""The layout guard: one installed package, and no top-level folder importable by its bare name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BARE = ["server", "training", "export", "client", "proto"]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", BARE)
def test_bare_folder_is_not_importable_outside_the_repository(name: str, tmp_path: Path) -> None:
    result = _run(f"import {name}", cwd=tmp_path)
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr


def test_subpackages_import_from_their_folders(tmp_path: Path, repo_root: Path) -> None:
    code = (
        "import cnnserve, cnnserve.server, cnnserve.training, cnnserve.export, cnnserve.client, cnnserve.proto\n"
        "for m in (cnnserve.server, cnnserve.training, cnnserve.export, cnnserve.client, cnnserve.proto):\n"
        "    print(m.__name__, m.__file__)\n"
    )
    result = _run(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert Path(lines["cnnserve.server"]).parent == repo_root / "server"
    assert Path(lines["cnnserve.training"]).parent == repo_root / "training"


def test_no_conftest_at_repository_root(repo_root: Path) -> None:
    assert not (repo_root / "conftest.py").exists()


def test_cli_lists_every_subcommand(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnnserve", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for name in ("train", "export", "serve", "classify", "bench"):
        assert name in result.stdout


def test_serving_and_client_code_import_neither_torch_nor_onnx(tmp_path: Path) -> None:
    """The server image and client installs carry neither: importing every serving entry point must not need them."""
    code = (
        "import sys\n"
        "import cnnserve.server.app, cnnserve.demo, cnnserve.server.workers\n"
        "import cnnserve.client.classify.batch, cnnserve.client.bench.loadgen\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript')))\n"
    )
    result = _run(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

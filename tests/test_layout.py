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


#: The edge modules: the only ones that import cnnserve.proto (protobuf messages, stubs, the OIP datatype table).
#: Behind them everything works on numpy arrays and frozen dataclasses.
PROTO_EDGE = {
    "server/classifier_service.py",  # cnnserve.v1.Classifier
    "server/inference_service.py",  # inference.GRPCInferenceService
    "server/tensors.py",  # a ModelInferRequest to numpy and back, once each way
    "server/health.py",  # grpc.health.v1 and ServerReady/ModelReady state
    "server/control.py",  # forwarding RepositoryModelLoad/Unload to the other workers
    "client/wire.py",  # every client message built and read
    "client/channel.py",  # the stubs
    "client/bench/workloads.py",  # the OIP datatype table only
}


def _imports_proto(path: Path) -> bool:
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.startswith("cnnserve.proto") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (
            (node.module or "").startswith("cnnserve.proto")
            or (node.module == "cnnserve" and any(a.name == "proto" for a in node.names))
        ):
            return True
    return False


def test_only_the_edge_modules_import_cnnserve_proto(repo_root: Path) -> None:
    folders = ("cnnserve", "training", "export", "server", "client")
    importing = {
        str(path.relative_to(repo_root))
        for folder in folders
        for path in (repo_root / folder).rglob("*.py")
        if _imports_proto(path)
    }
    assert importing == PROTO_EDGE

"""The client's three rooms: the library imports neither program, each program only the library; only wire.py
touches protobuf messages; and nothing the client imports pulls in torch or onnxruntime."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in `path` names (lazy imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def room_of(module: str) -> str | None:
    """ "classify" or "bench" for a module of a program, "library" for the rest of cnnserve.client, else None."""
    parts = module.split(".")
    if parts[:2] != ["cnnserve", "client"]:
        return None
    return parts[2] if len(parts) > 2 and parts[2] in ("classify", "bench") else "library"


def test_each_room_imports_only_itself_and_the_library() -> None:
    allowed = {"library": {"library"}, "classify": {"library", "classify"}, "bench": {"library", "bench"}}
    wrong = []
    files = sorted(CLIENT.rglob("*.py"))
    assert len(files) > 15  # the whole client, not an empty glob
    for path in files:
        relative = path.relative_to(CLIENT).parts
        room = relative[0] if len(relative) > 1 else "library"
        for module in imported_modules(path):
            target = room_of(module)
            if target is not None and target not in allowed[room]:
                wrong.append(f"client/{'/'.join(relative)} ({room}) imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def test_only_wire_touches_protobuf_messages() -> None:
    """Messages (the *_pb2 modules) are built and read in client/wire.py alone; the others may hold service stubs
    (*_pb2_grpc) but never a message."""
    wrong = []
    for path in sorted(CLIENT.rglob("*.py")):
        if path == CLIENT / "wire.py":
            continue
        for module in imported_modules(path):
            if module.endswith("_pb2") and not module.endswith("_pb2_grpc"):
                wrong.append(f"{path.relative_to(CLIENT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_client_imports_neither_torch_nor_onnxruntime() -> None:
    modules = [
        "cnnserve.client",
        "cnnserve.client.classify.batch",
        "cnnserve.client.aio",
        "cnnserve.client.classify.local",
    ]
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

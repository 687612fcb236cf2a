"""Model control on a real server: polling picks up new, changed, corrupted and removed versions; version policies;
explicit load/unload with our client; health, RepositoryIndex, ListModels and metrics follow every change."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.client import AsyncClient, Client
from cnnserve.client.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cnnserve.errors import ConfigError
from cnnserve.proto import classifier_pb2 as cpb
from cnnserve.proto import classifier_pb2_grpc as cpb_grpc
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig, parse_config
from cnnserve.server.errors import StartupError

POLL_S = 0.05


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def index(server: RunningServer) -> dict[tuple[str, int], tuple[str, str]]:
    return {(s.name, s.version): (s.state, s.reason) for s in server.state.repository.statuses()}


def metrics(server: RunningServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def repo(tmp_path: Path, put_version: Callable[..., Path]) -> Path:
    """tmp_path/"models"; put_version writes into it."""
    root = tmp_path / "models"
    root.mkdir()
    return root


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)


@pytest.fixture
def serve(repo: Path) -> Iterator[Callable[..., RunningServer]]:
    with_stack: list[Any] = []

    def start(**overrides: Any) -> RunningServer:
        config = ServerConfig(
            model_repository=repo, port=0, metrics_port=0, max_batch_size=8, grace_period_s=5, **overrides
        )
        context = serve_in_thread(config)
        with_stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(with_stack):
        context.__exit__(None, None, None)


def infer_version(stub: pb_grpc.GRPCInferenceServiceStub, name: str = "linear", version: str = "") -> tuple[str, Any]:
    pixels = random_images(2)
    request = pb.ModelInferRequest(model_name=name, model_version=version)
    request.inputs.add(name="input", datatype="UINT8", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    response = stub.ModelInfer(request, timeout=10)
    return response.model_version, np.frombuffer(response.raw_output_contents[0], dtype=np.float32)


def test_poll_serves_a_new_version_once_ready_and_unloads_a_removed_one(
    repo: Path, put_version: Any, serve: Any
) -> None:
    put_version("linear", 1)
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    with grpc.insecure_channel(server.address) as channel, Client(server.address) as client:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert infer_version(stub)[0] == "1"
        assert "model_repository" not in stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
        put_version("linear", 2, seed=2)
        wait_until(lambda: infer_version(stub)[0] == "2", what="version 2 answering")
        assert infer_version(stub, version="1")[0] == "1"  # the policy (all, no policy.json) keeps v1 loaded
        assert 'cnnserve_model_ready{model="linear",provider="CPUExecutionProvider",version="2"} 1.0' in metrics(server)
        shutil.rmtree(repo / "linear" / "1")
        wait_until(lambda: ("linear", 1) not in index(server), what="version 1 leaving")
        assert client.health("linear").serving and client.health().serving
        assert [(m.version, m.state) for m in client.repository_index()] == [(2, "READY")]
        text = metrics(server)
        assert 'version="2"' in text and 'version="1"' not in text  # no stale series of the removed version
        with pytest.raises(grpc.RpcError) as failure:
            infer_version(stub, version="1")
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        # a model folder that appears is loaded; one that goes is unloaded, and its health follows
        put_version("other", 1)
        wait_until(lambda: client.health("other").serving, what="model other serving")
        shutil.rmtree(repo / "other")
        wait_until(lambda: not client.health("other").serving, what="model other not serving")
        assert "other" not in {m.name for m in client.repository_index()}


def test_poll_a_corrupted_new_version_leaves_the_old_one_serving(repo: Path, put_version: Any, serve: Any) -> None:
    put_version("linear", 1)
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    put_version("linear", 2, sha256="0" * 64)
    wait_until(lambda: index(server).get(("linear", 2), ("",))[0] == "UNAVAILABLE", what="v2 failing")
    with grpc.insecure_channel(server.address) as channel, Client(server.address) as client:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert infer_version(stub)[0] == "1"
        assert not stub.ModelReady(pb.ModelReadyRequest(name="linear", version="2")).ready
        [v2] = [m for m in client.repository_index() if m.version == 2]
        assert v2.state == "UNAVAILABLE" and "sha256 of model.onnx" in v2.reason
        [listed] = [m for m in client.models() if m.version == 2]
        assert not listed.ready and "sha256" in listed.reason
        assert client.health("linear").serving
        with pytest.raises(grpc.RpcError) as failure:
            infer_version(stub, version="2")
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE and "sha256" in (failure.value.details() or "")
        # fixed in place (re-exported with --force): the next scan loads it
        put_version("linear", 2, seed=2)
        wait_until(lambda: infer_version(stub)[0] == "2", what="the fixed v2 answering")


def test_poll_changed_files_are_a_new_load_swapped_in_once_ready(repo: Path, put_version: Any, serve: Any) -> None:
    put_version("linear", 1, seed=1)
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, before = infer_version(stub)
        put_version("linear", 1, seed=5)
        wait_until(lambda: not np.array_equal(infer_version(stub)[1], before), what="the new weights answering")
        # changed files that are broken: the version keeps serving what it loaded, and says why in its reason
        _, now = infer_version(stub)
        card = (repo / "linear" / "1" / "model.json").read_text()
        (repo / "linear" / "1" / "model.json").write_text(card.replace('"sha256": "', '"sha256": "f'))
        wait_until(lambda: "the new ones fail" in index(server)[("linear", 1)][1], what="the failed reload reported")
        assert index(server)[("linear", 1)][0] == "READY"
        np.testing.assert_array_equal(infer_version(stub)[1], now)


@pytest.mark.parametrize(
    ("policy", "ready", "reason"),
    [
        ('{"latest": 1}', [3], "version policy (latest 1) serves higher versions"),
        ('{"latest": 2}', [2, 3], "version policy (latest 2) serves higher versions"),
        ('{"specific": [1, 3]}', [1, 3], "version policy (specific [1, 3]) does not choose it"),
        ('{"all": true}', [1, 2, 3], ""),
        ('{"newest": 1}', [], 'expected {"latest": N}, {"specific": [versions]} or {"all": true}'),
    ],
)
def test_version_policy_chooses_what_is_loaded(
    repo: Path, put_version: Any, serve: Any, policy: str, ready: list[int], reason: str
) -> None:
    for version in (1, 2, 3):
        put_version("linear", version, seed=version)
    put_version("spare", 1)  # a server with no READY "linear" still starts and serves this one
    (repo / "linear" / "policy.json").write_text(policy)
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    states = index(server)
    assert [v for (name, v), (state, _) in sorted(states.items()) if name == "linear" and state == "READY"] == ready
    reasons = [why for (name, _), (state, why) in states.items() if name == "linear" and state != "READY"]
    assert all(reason in why for why in reasons) and (reasons or not reason)


def test_latest_policy_skips_a_broken_version_and_serves_the_next_one_down(
    repo: Path, put_version: Any, serve: Any
) -> None:
    put_version("linear", 1)
    put_version("linear", 2, sha256="0" * 64)
    (repo / "linear" / "policy.json").write_text('{"latest": 1}')
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    assert server.state.repository.get("linear").version == 1
    assert "sha256" in index(server)[("linear", 2)][1]


def test_explicit_load_unload_reload_with_our_client(repo: Path, put_version: Any, serve: Any) -> None:
    put_version("linear", 1)
    put_version("broken", 1, sha256="0" * 64)
    put_version("spare", 1)
    server = serve(model_control_mode="explicit", load_model=("spare",))
    with Client(server.address, timeout_s=30) as client:
        assert {(m.name, m.state) for m in client.repository_index()} == {
            ("linear", "UNAVAILABLE"),
            ("broken", "UNAVAILABLE"),
            ("spare", "READY"),
        }
        assert "not loaded" in next(m.reason for m in client.repository_index() if m.name == "linear")
        assert not client.health("linear").serving
        client.load_model("linear")
        assert client.health("linear").serving
        assert client.infer(random_images(3), model="linear").shape == (3, 10)
        client.unload_model("linear", unload_dependents=True)
        assert (
            next(m for m in client.repository_index() if m.name == "linear").reason
            == "unloaded by RepositoryModelUnload"
        )
        assert not client.ready("linear") and not client.health("linear").serving
        client.load_model("linear")  # reload
        assert client.infer(random_images(1), model="linear").shape == (1, 10)
        put_version("later", 1)  # a folder added after start is listed, and loads
        assert ("later", "UNAVAILABLE") in {(m.name, m.state) for m in client.repository_index()}
        client.load_model("later")
        assert client.ready("later")
        with pytest.raises(NotFound, match="no such model folder"):
            client.load_model("nothing_here")
        with pytest.raises(InvalidArgument, match=r"did not load: version 1: sha256 of model\.onnx"):
            client.load_model("broken")
        with pytest.raises(NotFound, match="unknown model"):
            client.unload_model("nothing_here")
        assert client.infer(random_images(1), model="spare").shape == (1, 10)  # still serving
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        extensions = stub.ServerMetadata(pb.ServerMetadataRequest()).extensions
        assert "model_repository" in extensions and "model_repository(unload_dependents)" in extensions
        request = pb.RepositoryModelLoadRequest(model_name="linear")
        request.parameters["config"].string_param = "{}"
        with pytest.raises(grpc.RpcError) as failure:
            stub.RepositoryModelLoad(request)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'config' is not supported" in str(
            failure.value.details()
        )


def test_unloading_lets_queued_requests_finish(repo: Path, put_version: Any, serve: Any) -> None:
    put_version("linear", 1)
    # one instance and a long queue delay: the requests are still queued when the unload arrives
    server = serve(
        model_control_mode="explicit", load_model=("*",), instances=1, eager_dispatch=False, max_queue_delay_us=300_000
    )

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with AsyncClient(server.address, timeout_s=30) as client:
            requests = [asyncio.ensure_future(client.infer(random_images(1, seed=i), model="linear")) for i in range(6)]
            served = server.state.repository.get("linear")
            while served.stats.pending < 6:
                await asyncio.sleep(0.005)
            unloading = asyncio.ensure_future(client.unload_model("linear"))
            while server.state.repository.statuses()[0].state != "UNLOADING":
                await asyncio.sleep(0.005)
            assert served.stats.pending == 6  # listed as UNLOADING while its queued requests wait
            await unloading
            assert server.state.repository.statuses()[0].state == "UNAVAILABLE"
            results = await asyncio.gather(*requests, return_exceptions=True)
            after = await asyncio.gather(client.infer(random_images(1), model="linear"), return_exceptions=True)
            return results, after

    results, after = asyncio.run(scenario())
    assert all(isinstance(r, np.ndarray) and r.shape == (1, 10) for r in results), results
    assert isinstance(after[0], Unavailable) and "unloaded" in str(after[0])


def test_explicit_mode_starts_with_nothing_loaded_and_other_modes_refuse_load(
    repo: Path, put_version: Any, serve: Any
) -> None:
    put_version("linear", 1)
    server = serve(model_control_mode="explicit")
    assert not server.state.repository.ready
    with Client(server.address) as client:
        client.load_model("linear")
        assert client.ready()
    other = serve()
    with (
        Client(other.address) as client,
        pytest.raises(FailedPrecondition, match="needs --model-control-mode explicit"),
    ):
        client.unload_model("linear")
    with grpc.insecure_channel(other.address) as channel:
        listed = cpb_grpc.ClassifierStub(channel).ListModels(cpb.ListModelsRequest())
        assert [m.state for m in listed.models] == ["READY"]


def test_model_control_flags_and_variables(tmp_path: Path) -> None:
    config = parse_config(
        [
            "--model-repository",
            str(tmp_path),
            "--model-control-mode",
            "explicit",
            "--load-model",
            "a",
            "--load-model",
            "b,c",
        ],
        {},
    )
    assert (config.model_control_mode, config.load_model, config.repository_poll_secs) == (
        "explicit",
        ("a", "b", "c"),
        15.0,
    )
    config = parse_config(
        ["--model-repository", str(tmp_path)],
        {
            "CNNSERVE_MODEL_CONTROL_MODE": "explicit",
            "CNNSERVE_LOAD_MODEL": "a, b",
            "CNNSERVE_REPOSITORY_POLL_SECS": "2",
        },
    )
    assert (config.load_model, config.repository_poll_secs) == (("a", "b"), 2.0)
    with pytest.raises(ConfigError, match="load_model chooses what explicit model control loads"):
        ServerConfig(model_repository=tmp_path, load_model=("a",))
    with pytest.raises(ConfigError, match="repository_poll_secs must be between"):
        ServerConfig(model_repository=tmp_path, repository_poll_secs=0)
    (tmp_path / "a" / "1").mkdir(parents=True)
    with (
        pytest.raises(StartupError, match="--load-model nope: not in"),
        serve_in_thread(
            ServerConfig(
                model_repository=tmp_path, port=0, metrics_port=-1, model_control_mode="explicit", load_model=("nope",)
            )
        ),
    ):
        pass


def test_a_policy_change_is_applied_at_the_next_scan_and_an_invalid_one_keeps_what_serves(
    repo: Path, put_version: Any, serve: Any
) -> None:
    put_version("linear", 1)
    put_version("linear", 2, seed=2)
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    assert [s.state for s in server.state.repository.statuses()] == ["READY", "READY"]
    (repo / "linear" / "policy.json").write_text('{"latest": 1}')
    wait_until(lambda: index(server)[("linear", 1)][0] == "UNAVAILABLE", what="v1 unloaded by the policy")
    assert "version policy (latest 1)" in index(server)[("linear", 1)][1]
    (repo / "linear" / "policy.json").write_text("{latest: 1")
    wait_until(lambda: "is not JSON" in index(server)[("linear", 1)][1], what="the invalid policy reported")
    assert index(server)[("linear", 2)] == ("READY", "")
    assert server.state.repository.get("linear").version == 2


def test_a_polled_server_starts_on_an_empty_repository_and_serves_what_arrives(
    repo: Path, put_version: Any, serve: Any
) -> None:
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    with Client(server.address) as client:
        assert not client.ready() and not client.health().serving
        put_version("linear", 1)
        wait_until(lambda: client.health().serving, what="the server serving once a version arrived")
        assert client.infer(random_images(1), model="linear").shape == (1, 10)


def test_a_version_is_listed_loading_while_it_loads_and_serves_only_once_ready(
    repo: Path, put_version: Any, serve: Any
) -> None:
    # 1 x 512 x 512 inputs: its warm-up (every batch size up to 8) lasts long enough to be seen
    put_version("large", 1, size=512)
    server = serve(model_control_mode="explicit")
    seen: set[str] = set()
    with Client(server.address, timeout_s=60) as client:
        loading = threading.Thread(target=client.load_model, args=("large",))
        loading.start()
        answered_while_loading = []
        while loading.is_alive():
            seen |= {s.state for s in server.state.repository.statuses()}
            if "LOADING" in seen and not answered_while_loading:
                with grpc.insecure_channel(server.address) as channel:
                    ready = pb_grpc.GRPCInferenceServiceStub(channel).ModelReady(pb.ModelReadyRequest(name="large"))
                if server.state.repository.statuses()[0].state == "LOADING":  # still: it was LOADING when it answered
                    answered_while_loading.append(ready.ready)
            time.sleep(0.002)
        loading.join()
        assert "LOADING" in seen and answered_while_loading == [False] and client.ready("large")


def test_a_folder_written_in_place_is_never_served_half_written(
    repo: Path, put_version: Any, serve: Any, tmp_path: Path
) -> None:
    put_version("linear", 1)
    server = serve(model_control_mode="poll", repository_poll_secs=POLL_S)
    complete = put_version("spare", 2, seed=2)  # a complete v2, copied below by hand, the slow way
    folder = repo / "linear" / "2"
    folder.mkdir()
    card = (complete / "model.json").read_text().replace('"spare"', '"linear"')
    (folder / "model.json").write_text(card)
    data = (complete / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    time.sleep(POLL_S * 4)
    assert index(server)[("linear", 2)][0] in ("UNAVAILABLE", "LOADING")
    assert server.state.repository.get("linear").version == 1
    (folder / "model.onnx").write_bytes(data)
    wait_until(lambda: server.state.repository.get("linear").version == 2, what="the completed v2 serving")

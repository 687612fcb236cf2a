"""Bearer tokens on a real cnnserve server: a missing, malformed, wrong and right token on every service (Classifier,
Open Inference Protocol, reflection; unary and streams), health open without one, the client library's token option,
the token file's start-up errors, and rotation by SIGHUP (one process, and every worker of --workers)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cnnserve.client import Client
from cnnserve.client import errors as E
from cnnserve.proto import classifier_pb2 as pb
from cnnserve.proto import classifier_pb2_grpc as pb_grpc
from cnnserve.proto import grpc_service_pb2 as oip
from cnnserve.proto import grpc_service_pb2_grpc as oip_grpc
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError
from cnnserve.server.security import read_tokens

TOKENS = ("first-token-0123456789", "second-token-abcdef")
Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# one token per line\n{TOKENS[0]}\n\n{TOKENS[1]}\n")
    return path


@pytest.fixture(scope="module")
def token_server(grayscale_repository: Path, token_file: Path) -> Iterator[RunningServer]:
    config = ServerConfig(
        model_repository=grayscale_repository, port=0, metrics_port=-1, grace_period_s=1.0, auth_token_file=token_file
    )
    assert config.reflection, "on 127.0.0.1 reflection is on by default: its token check is part of this test"
    with serve_in_thread(config) as server:
        yield server


# Each: one real call of a service, raising grpc.RpcError when refused.
def list_models(channel: grpc.Channel, metadata: Metadata) -> None:
    pb_grpc.ClassifierStub(channel).ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)


def classify_stream(channel: grpc.Channel, metadata: Metadata) -> None:
    list(pb_grpc.ClassifierStub(channel).ClassifyStream(iter(()), metadata=metadata, timeout=10))


def server_live(channel: grpc.Channel, metadata: Metadata) -> None:
    assert (
        oip_grpc.GRPCInferenceServiceStub(channel)
        .ServerLive(oip.ServerLiveRequest(), metadata=metadata, timeout=10)
        .live
    )


def model_stream_infer(channel: grpc.Channel, metadata: Metadata) -> None:
    list(oip_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(()), metadata=metadata, timeout=10))


def reflection_list(channel: grpc.Channel, metadata: Metadata) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10))
    assert "cnnserve.v1.Classifier" in {service.name for service in answer.list_services_response.service}


CALLS: dict[str, Callable[[grpc.Channel, Metadata], None]] = {
    "Classifier.ListModels": list_models,
    "Classifier.ClassifyStream": classify_stream,
    "GRPCInferenceService.ServerLive": server_live,
    "GRPCInferenceService.ModelStreamInfer": model_stream_infer,
    "ServerReflection.ServerReflectionInfo": reflection_list,
}


def refused_with(call: Callable[[grpc.Channel, Metadata], None], address: str, metadata: Metadata) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as failure:
        call(channel, metadata)
    return failure.value


@pytest.mark.parametrize("method", sorted(CALLS))
def test_every_service_refuses_a_missing_or_wrong_token_and_serves_a_right_one(
    token_server: RunningServer, method: str
) -> None:
    call, address = CALLS[method], token_server.address
    missing = refused_with(call, address, ())
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in str(missing.details())
    malformed = refused_with(call, address, (("authorization", TOKENS[0]),))  # no "Bearer " scheme
    assert malformed.code() == grpc.StatusCode.UNAUTHENTICATED
    for wrong in ("nope", TOKENS[0][:-1], TOKENS[0] + "x", TOKENS[1].upper()):
        refused = refused_with(call, address, bearer(wrong))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        # No hint which tokens exist or how close this one came: one message for every wrong token.
        assert refused.details() == "the bearer token is not accepted by this server"
    with grpc.insecure_channel(address) as channel:
        for token in TOKENS:
            call(channel, bearer(token))
        call(channel, (("authorization", f"bearer {TOKENS[1]}"),))  # the scheme is case-insensitive


def test_health_stays_open_without_a_token(token_server: RunningServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_client_library_sends_its_token(token_server: RunningServer) -> None:
    with Client(token_server.address, token=TOKENS[1]) as client:
        assert client.models() and client.health().serving
    with Client(token_server.address, token="wrong") as client, pytest.raises(E.PermissionDenied) as wrong:
        client.models()
    assert wrong.value.code == "PERMISSION_DENIED" and "wrong" not in str(wrong.value)
    with Client(token_server.address) as client, pytest.raises(E.PermissionDenied) as missing:
        client.models()
    assert missing.value.code == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "holds no token"), ("# only a comment\n\n", "holds no token"), ("good\nwith space\n", "line 2")],
)
def test_a_token_file_that_cannot_work_is_a_startup_error(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(StartupError, match=expected):
        read_tokens(path)
    with pytest.raises(StartupError, match="cannot read --auth-token-file"):
        read_tokens(tmp_path / "missing")


# --- rotation ---------------------------------------------------------------------------------------------------------


def answer_of(address: str, token: str) -> str:
    """OK, or the status name a fresh connection gets for ListModels with `token`."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own (with --workers: any worker)
    with grpc.insecure_channel(address, options=options) as channel:
        try:
            list_models(channel, bearer(token))
        except grpc.RpcError as error:
            return str(error.code().name)
    return "OK"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def rotate(serve_process: Callable[..., Any], repository: Path, tmp_path: Path, workers: int = 1) -> None:
    """Start a server with token A, replace the file by token B, SIGHUP: A is refused, B accepted, on every
    connection. Then an empty file and SIGHUP: the server keeps B (and says so) rather than refusing everyone."""
    path = tmp_path / "tokens"
    path.write_text("token-a\n")
    process = serve_process(
        "--model-repository", str(repository), "--port", "0", "--metrics-port", "-1", "--auth-token-file", str(path),
        "--workers", str(workers),
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{process.wait_listening()}"
        # At once, while other workers may still be starting: they ignore it (they read the file when they start)
        # rather than die of it. Then wait for all.
        os.kill(process.process.pid, signal.SIGHUP)
        wait_for(lambda: process.stderr.count("listening on") == workers)
        wait_for(lambda: answer_of(address, "token-a") == "OK")
        assert "exited with" not in process.stderr, process.stderr
        connections = 8

        def rereads() -> int:
            return process.stderr.count("bearer tokens re-read: 1 from")

        early_rereads = rereads()  # by the workers that were up at the early SIGHUP
        assert early_rereads <= workers
        path.write_text("token-b\n")
        os.kill(process.process.pid, signal.SIGHUP)
        wait_for(lambda: all(answer_of(address, "token-a") == "PERMISSION_DENIED" for _ in range(connections)))
        assert all(answer_of(address, "token-b") == "OK" for _ in range(connections))
        wait_for(lambda: rereads() == early_rereads + workers)  # every worker, once

        path.write_text("")
        os.kill(process.process.pid, signal.SIGHUP)
        wait_for(lambda: process.stderr.count("keeping the 1 tokens in force") == workers)
        assert all(answer_of(address, "token-b") == "OK" for _ in range(connections))
        assert process.process.poll() is None, process.stderr
    finally:
        # SIGTERM, not the fixture's SIGKILL: the supervisor passes it on, so no worker outlives the test.
        process.process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stderr


def test_sighup_rotates_the_tokens(serve_process: Callable[..., Any], linear_repository: Path, tmp_path: Path) -> None:
    rotate(serve_process, linear_repository, tmp_path)


@pytest.mark.slow
def test_sighup_rotates_the_tokens_in_every_worker(
    serve_process: Callable[..., Any], linear_repository: Path, tmp_path: Path
) -> None:
    rotate(serve_process, linear_repository, tmp_path, workers=2)


def test_cnnserve_bench_sends_its_token(
    token_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnserve.client.bench.loadgen import main as bench_main

    (model,) = {served.name for served in token_server.state.repository.served()}
    out = tmp_path / "points.jsonl"
    common = ["--server", token_server.address, "--model", model, "--concurrency", "2", "--processes", "2"]
    timing = ["--duration", "0.3s", "--warmup", "0.1s", "--json-out", str(out)]
    assert bench_main([*common, *timing, "--token", TOKENS[0]]) == 0  # plaintext, but to loopback
    (point,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert point["requests"] > 0 and point["errors"] == {}
    assert bench_main([*common, *timing]) == 3
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    # Off this machine a token goes only over TLS.
    assert bench_main(["--server", "192.0.2.1:8001", "--token", TOKENS[0], *timing]) == 2
    assert "clear text" in capsys.readouterr().err

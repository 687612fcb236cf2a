"""The client's TLS and token options against a real cnnserve server that requires mutual TLS and a bearer token,
through the library and `cnnserve classify`; and the refusal to send a token in clear text off this machine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnnserve.client import Client, ClientConfig, TLSConfig
from cnnserve.client import errors as E
from cnnserve.client.classify.batch import main as classify_main
from cnnserve.errors import ConfigError
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def mtls_token_server(
    grayscale_repository: Path, certificates: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("client-tls") / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    config = ServerConfig(
        model_repository=grayscale_repository,
        port=0,
        metrics_port=-1,
        grace_period_s=1.0,
        tls_cert=certificates.server_pem,
        tls_key=certificates.server_key,
        tls_client_ca=certificates.ca_pem,
        auth_token_file=tokens,
    )
    with serve_in_thread(config) as server:
        yield server


def mutual_tls(certificates: Any) -> TLSConfig:
    return TLSConfig(
        root_cert=certificates.ca_pem, client_cert=certificates.client_pem, client_key=certificates.client_key
    )


def served_model(server: RunningServer) -> tuple[str, Path]:
    """The name and model.onnx of the one model the server serves."""
    (model,) = server.state.repository.served()
    return model.name, server.state.config.model_repository / model.name / str(model.version) / "model.onnx"


def mutual_tls_flags(certificates: Any) -> list[str]:
    """The command-line flags of mutual_tls(certificates), as classify and bench take them."""
    tls = mutual_tls(certificates)
    return [
        "--tls-root-cert", str(tls.root_cert), "--tls-client-cert", str(tls.client_cert),
        "--tls-client-key", str(tls.client_key),
    ]  # fmt: skip


def test_mutual_tls_with_a_token_is_served(
    mtls_token_server: RunningServer, certificates: Any, fashion_tree: Any
) -> None:
    import onnxruntime

    name, onnx_file = served_model(mtls_token_server)
    with Client(mtls_token_server.address, tls=mutual_tls(certificates), token=TOKEN) as client:
        assert client.health().serving
        results = client.classify([str(p) for p in fashion_tree.paths[:4]], model=name)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: fashion_tree.pixels[:4]})
    assert [result.top[0].index for result in results] == logits.argmax(axis=1).tolist()


def test_a_missing_token_is_refused_over_mutual_tls(mtls_token_server: RunningServer, certificates: Any) -> None:
    with (
        Client(mtls_token_server.address, tls=mutual_tls(certificates)) as client,
        pytest.raises(E.PermissionDenied) as exc,
    ):
        client.models()
    assert exc.value.code == "UNAUTHENTICATED" and "Bearer" in str(exc.value)


def test_no_client_certificate_or_no_tls_cannot_connect(mtls_token_server: RunningServer, certificates: Any) -> None:
    server_only = TLSConfig(root_cert=certificates.ca_pem)
    with (
        pytest.raises(E.ServerUnreachable),
        Client(mtls_token_server.address, tls=server_only, token=TOKEN, connect_timeout_s=1),
    ):
        pass
    with pytest.raises(E.ServerUnreachable), Client(mtls_token_server.address, token=TOKEN, connect_timeout_s=1):
        pass


def test_cnnserve_classify_takes_the_tls_and_token_flags(
    mtls_token_server: RunningServer, certificates: Any, fashion_tree: Any, tmp_path: Path
) -> None:
    output = tmp_path / "rows.jsonl"
    tls = mutual_tls_flags(certificates)
    common = [
        str(fashion_tree.root),
        "--server",
        mtls_token_server.address,
        "--model",
        served_model(mtls_token_server)[0],
        "-q",
    ]
    assert classify_main([*common, *tls, "--token", TOKEN, "--limit", "8", "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 8 and not any(row["error"] for row in rows)
    # Without the token the first call (ListModels) is refused: could not start.
    assert classify_main([*common, *tls, "--limit", "8", "--output", str(tmp_path / "refused.jsonl")]) == 3


def test_tls_options_are_checked_when_made(certificates: Any) -> None:
    with pytest.raises(ConfigError, match="together"):
        TLSConfig(root_cert=certificates.ca_pem, client_cert=certificates.client_pem)
    with pytest.raises(ConfigError, match="cannot read TLS root certificate"):
        Client("127.0.0.1:1", tls=TLSConfig(root_cert=certificates.folder / "missing.pem")).open()


@pytest.mark.parametrize("target", ["10.1.2.3:8001", "dns:///cnnserve.example.org:8001", "[2001:db8::1]:8001"])
def test_a_token_is_not_sent_in_clear_text_off_this_machine(target: str, certificates: Any) -> None:
    with pytest.raises(ConfigError, match="clear text") as refused:
        ClientConfig.create(target, token=TOKEN)
    assert "--allow-insecure-token" in str(refused.value) and TOKEN not in str(refused.value)
    # Over TLS, or when the caller says the network is trusted, it is sent.
    ClientConfig.create(target, token=TOKEN, tls=TLSConfig(root_cert=certificates.ca_pem))
    ClientConfig.create(target, token=TOKEN, allow_insecure_token=True)
    ClientConfig.create(target)  # no token: nothing to protect


@pytest.mark.parametrize("target", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001", "unix:/tmp/cnnserve.sock"])
def test_a_token_in_clear_text_to_this_machine_is_allowed(target: str) -> None:
    ClientConfig.create(target, token=TOKEN)


def test_cnnserve_classify_refuses_a_clear_text_token_and_says_why(
    fashion_tree: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = classify_main([str(fashion_tree.root), "--server", "192.0.2.1:8001", "--token", TOKEN, "-q"])
    assert code == 3
    message = capsys.readouterr().err
    assert "clear text" in message and "--allow-insecure-token" in message


def test_cnnserve_bench_runs_over_mutual_tls_with_a_token(
    mtls_token_server: RunningServer, certificates: Any, tmp_path: Path
) -> None:
    from cnnserve.client.bench.loadgen import main as bench_main

    out = tmp_path / "points.jsonl"
    tls = mutual_tls_flags(certificates)
    args = ["--server", mtls_token_server.address, "--model", served_model(mtls_token_server)[0], "--concurrency", "2"]
    timing = ["--duration", "0.3s", "--warmup", "0.1s", "--json-out", str(out)]
    assert bench_main([*args, *tls, "--token", TOKEN, *timing]) == 0
    (point,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert point["requests"] > 0 and point["errors"] == {}

"""TLS and mutual TLS on a real cnnserve server: the client library, the unmodified tritonclient (ssl=True) and a
plaintext client against it; client certificates from the right CA, from another CA and none; the start-up errors
for certificate and key files that cannot work, raised before any model loads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.client import Client, TLSConfig
from cnnserve.client import errors as E
from cnnserve.server.app import RunningServer, serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError
from cnnserve.server.security import load_tls


def tls_config(repository: Path, certificates: Any, **fields: Any) -> ServerConfig:
    return ServerConfig(
        model_repository=repository,
        port=0,
        metrics_port=-1,
        grace_period_s=1.0,
        tls_cert=certificates.server_pem,
        tls_key=certificates.server_key,
        **fields,
    )


@pytest.fixture(scope="module")
def tls_server(grayscale_repository: Path, certificates: Any) -> Iterator[RunningServer]:
    with serve_in_thread(tls_config(grayscale_repository, certificates)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(grayscale_repository: Path, certificates: Any) -> Iterator[RunningServer]:
    with serve_in_thread(tls_config(grayscale_repository, certificates, tls_client_ca=certificates.ca_pem)) as server:
        yield server


def test_the_client_library_classifies_over_tls_with_the_root_certificate(
    tls_server: RunningServer, certificates: Any, fashion_images: np.ndarray
) -> None:
    with Client(tls_server.address, tls=TLSConfig(root_cert=certificates.ca_pem)) as client:
        assert client.health().serving
        model = next(m.name for m in tls_server.state.repository.served() if m.card.input.shape == (1, 28, 28))
        results = client.classify(list(fashion_images[:3]), model=model, top_k=2)
    assert [len(result.top) for result in results] == [2, 2, 2] and all(result.ok for result in results)


def test_a_plaintext_client_or_an_untrusted_certificate_cannot_connect(
    tls_server: RunningServer, certificates: Any
) -> None:
    with pytest.raises(E.ServerUnreachable), Client(tls_server.address, connect_timeout_s=1):
        pass
    # The server's certificate is not signed by this CA: the handshake fails on the client's side.
    untrusted = TLSConfig(root_cert=certificates.other_ca_pem)
    with pytest.raises(E.ServerUnreachable), Client(tls_server.address, tls=untrusted, connect_timeout_s=1):
        pass
    # And a plaintext call fails rather than being answered.
    with grpc.insecure_channel(tls_server.address) as channel:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with pytest.raises(grpc.RpcError) as failure:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_tritonclient_works_unmodified_over_tls(
    tls_server: RunningServer, certificates: Any, tritonclient_session: Callable[..., None]
) -> None:
    # The address is 127.0.0.1; the certificate names it (IP SAN), so no target name override is needed.
    (model,) = tls_server.state.repository.served()
    tritonclient_session(tls_server.address, root_ca=certificates.ca_pem, model=model)


def mutual_tls(certificates: Any) -> TLSConfig:
    return TLSConfig(
        root_cert=certificates.ca_pem, client_cert=certificates.client_pem, client_key=certificates.client_key
    )


def test_mutual_tls_serves_a_client_certificate_of_its_ca(mtls_server: RunningServer, certificates: Any) -> None:
    with Client(mtls_server.address, tls=mutual_tls(certificates)) as client:
        assert client.health().serving
        assert client.models()


@pytest.mark.parametrize("client_cert", [None, "other_client"], ids=["no-certificate", "another-ca"])
def test_mutual_tls_refuses_a_client_without_a_certificate_of_its_ca(
    mtls_server: RunningServer, certificates: Any, client_cert: str | None
) -> None:
    if client_cert is None:
        tls = TLSConfig(root_cert=certificates.ca_pem)
    else:
        pem, key = getattr(certificates, f"{client_cert}_pem"), getattr(certificates, f"{client_cert}_key")
        tls = TLSConfig(root_cert=certificates.ca_pem, client_cert=pem, client_key=key)
    with pytest.raises(E.ServerUnreachable), Client(mtls_server.address, tls=tls, connect_timeout_s=1):
        pass
    # The server kept serving: a good client still gets in.
    with Client(mtls_server.address, tls=mutual_tls(certificates)) as client:
        assert client.health().serving


# --- start-up errors -------------------------------------------------------------------------------------------------


def bad_files(certificates: Any, tmp_path: Path) -> dict[str, tuple[dict[str, Path], Path, str]]:
    """name -> (the TLS fields, the file the error must name, what it must say)."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
    missing = tmp_path / "nope.pem"
    cert, key = certificates.server_pem, certificates.server_key
    good = {"tls_cert": cert, "tls_key": key}
    return {
        "missing-cert": ({**good, "tls_cert": missing}, missing, "cannot read --tls-cert"),
        "key-as-cert": ({**good, "tls_cert": key}, key, "is not a PEM certificate"),
        "cert-as-key": ({**good, "tls_key": cert}, cert, "is not a PEM private key"),
        "garbage-cert": ({**good, "tls_cert": garbage}, garbage, "does not hold valid PEM certificates"),
        "mismatched-key": ({**good, "tls_key": certificates.client_key}, certificates.client_key, "does not belong"),
        "encrypted-key": ({**good, "tls_key": encrypted}, encrypted, "is encrypted"),
        "garbage-client-ca": ({**good, "tls_client_ca": garbage}, garbage, "--tls-client-ca"),
    }


def test_every_unusable_tls_file_is_a_startup_error_naming_it(certificates: Any, tmp_path: Path) -> None:
    for name, (files, culprit, expected) in bad_files(certificates, tmp_path).items():
        config = ServerConfig(model_repository=tmp_path, **files)  # type: ignore[arg-type]
        with pytest.raises(StartupError) as failure:
            load_tls(config)
        message = str(failure.value)
        assert expected in message and str(culprit) in message, f"{name}: {message}"


def test_cnnserve_serve_exits_3_on_a_mismatched_key_before_loading_models(
    certificates: Any, tmp_path: Path, serve_process: Callable[..., Any]
) -> None:
    # The repository does not exist: had the models been loaded first, that would be the error reported.
    process = serve_process(
        "--model-repository", str(tmp_path / "no-such-repository"), "--port", "0", "--metrics-port", "-1",
        "--tls-cert", str(certificates.server_pem), "--tls-key", str(certificates.client_key),
    )  # fmt: skip
    assert process.wait(60) == 3
    assert f"--tls-key {certificates.client_key} does not belong to --tls-cert" in process.stderr
    assert "no-such-repository" not in process.stderr
    assert "Traceback" not in process.stderr


def test_tls_flags_and_variables_are_validated_together(tmp_path: Path) -> None:
    from cnnserve.errors import ConfigError
    from cnnserve.server.config import parse_config

    config = parse_config(
        ["--model-repository", str(tmp_path)],
        environ={"CNNSERVE_TLS_CERT": "/a.pem", "CNNSERVE_TLS_KEY": "/a.key", "CNNSERVE_TLS_CLIENT_CA": "/ca.pem"},
    )
    assert (config.tls_cert, config.tls_key, config.tls_client_ca) == (Path("/a.pem"), Path("/a.key"), Path("/ca.pem"))
    with pytest.raises(ConfigError, match="go together"):
        parse_config(["--model-repository", str(tmp_path), "--tls-cert", "/a.pem"], environ={})
    with pytest.raises(ConfigError, match="needs tls_cert"):
        parse_config(["--model-repository", str(tmp_path), "--tls-client-ca", "/ca.pem"], environ={})


def test_cnnserve_bench_runs_over_tls(tls_server: RunningServer, certificates: Any, tmp_path: Path) -> None:
    from cnnserve.client.bench.loadgen import main as bench_main

    model = next(m.name for m in tls_server.state.repository.served() if m.card.input.shape == (1, 28, 28))
    out = tmp_path / "points.jsonl"
    common = ["--server", tls_server.address, "--model", model, "--concurrency", "2", "--processes", "2"]
    timing = ["--duration", "0.3s", "--warmup", "0.1s", "--json-out", str(out)]
    assert bench_main([*common, *timing, "--tls-root-cert", str(certificates.ca_pem)]) == 0
    (point,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert point["requests"] > 0 and point["errors"] == {}
    # Plaintext against the TLS port: nothing answers.
    assert bench_main([*common, *timing, "--timeout", "1s"]) == 3

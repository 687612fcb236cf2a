"""The client's TLS and metadata options against a real gRPC server that requires mutual TLS and a bearer token.

cnnserve's own server listens in plaintext (TLS is for the proxy in front of it), so this test serves the standard
grpc.health.v1 service over TLS itself; the certificates are made with the openssl command.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cnnserve.client import Client, TLSConfig
from cnnserve.client import errors as E

TOKEN = "s3cret"


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for "localhost" and a client certificate, all signed by the CA (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=folder
    )
    for name in ("server", "client"):
        (folder / f"{name}.ext").write_text("subjectAltName=DNS:localhost\n")
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder,
        )  # fmt: skip
    return folder


class RequireToken(grpc.ServerInterceptor):
    """Refuses calls without `authorization: Bearer TOKEN` (UNAUTHENTICATED), as an auth proxy would."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        if (("authorization", f"Bearer {TOKEN}")) in tuple(details.invocation_metadata or ()):
            return continuation(details)

        def refuse(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture(scope="module")
def tls_server(certificates: Path) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[RequireToken()])
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [((certificates / "server.key").read_bytes(), (certificates / "server.pem").read_bytes())],
        root_certificates=(certificates / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def mutual_tls(certificates: Path) -> TLSConfig:
    return TLSConfig(
        root_cert=certificates / "ca.pem",
        client_cert=certificates / "client.pem",
        client_key=certificates / "client.key",
        server_name="localhost",  # the certificate names localhost; we dial 127.0.0.1
    )


def test_mutual_tls_with_a_token_is_served(tls_server: str, certificates: Path) -> None:
    with Client(tls_server, tls=mutual_tls(certificates), token=TOKEN) as client:
        assert client.health().serving


def test_a_missing_token_is_permission_denied(tls_server: str, certificates: Path) -> None:
    with Client(tls_server, tls=mutual_tls(certificates)) as client, pytest.raises(E.PermissionDenied) as exc:
        client.health()
    assert exc.value.code == "UNAUTHENTICATED" and "bearer token" in str(exc.value)


def test_no_client_certificate_or_no_tls_cannot_connect(tls_server: str, certificates: Path) -> None:
    server_only = TLSConfig(root_cert=certificates / "ca.pem", server_name="localhost")
    with pytest.raises(E.ServerUnreachable), Client(tls_server, tls=server_only, token=TOKEN, connect_timeout_s=1):
        pass
    with pytest.raises(E.ServerUnreachable), Client(tls_server, token=TOKEN, connect_timeout_s=1):
        pass


def test_tls_options_are_checked_when_made(certificates: Path) -> None:
    from cnnserve.errors import ConfigError

    with pytest.raises(ConfigError, match="together"):
        TLSConfig(root_cert=certificates / "ca.pem", client_cert=certificates / "client.pem")
    with pytest.raises(ConfigError, match="cannot read TLS root certificate"):
        Client("127.0.0.1:1", tls=TLSConfig(root_cert=certificates / "missing.pem")).open()

"""Transport security at the server's edge: TLS credentials read from PEM files, and bearer-token authentication.

`load_tls` checks the certificate, key and client CA before any model loads, so a wrong file is a start-up error
that names it. `TokenStore` holds the accepted tokens (re-read on SIGHUP) and `BearerTokenInterceptor` refuses
every call without one, in one place for every service, except grpc.health.v1, which stays open for probes.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError

logger = logging.getLogger(__name__)

#: Methods under this prefix need no token: health probes (Kubernetes, Docker, balancers) send none.
OPEN_PREFIX = "/grpc.health.v1.Health/"
_BEARER = "bearer "  # the scheme is case-insensitive (RFC 6750, section 2.1)


@dataclass(frozen=True, slots=True)
class TLSMaterial:
    """The PEM bytes the gRPC server credentials are made of."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None  # set: mutual TLS, a client certificate signed by one of these is required

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def _read(path: Path, flag: str, marker: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {flag} {path}: {exc.strerror or exc}") from exc
    if marker.encode() not in data:
        raise StartupError(f"{flag} {path} is not a PEM {what}: expected a '{marker}' line")
    return data


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).lower().replace("_", " ")


def _check_certificates(path: Path, flag: str) -> None:
    """Parse every certificate of a PEM file with the standard library's OpenSSL."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError as exc:
        raise StartupError(f"{flag} {path} does not hold valid PEM certificates: {_reason(exc)}") from exc


def load_tls(config: ServerConfig) -> TLSMaterial | None:
    """The TLS material of config (None: plaintext). StartupError naming the file that is unreadable, not PEM,
    not parseable, encrypted, or whose key does not belong to the certificate."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert = _read(config.tls_cert, "--tls-cert", "-----BEGIN CERTIFICATE-----", "certificate")
    key = _read(config.tls_key, "--tls-key", "PRIVATE KEY-----", "private key")
    if b"ENCRYPTED" in key:
        raise StartupError(
            f"--tls-key {config.tls_key} is encrypted; the server cannot ask for a passphrase: "
            "decrypt it (openssl pkey -in KEY -out PLAIN_KEY) and keep it readable only by the server's user"
        )
    _check_certificates(config.tls_cert, "--tls-cert")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(config.tls_cert), str(config.tls_key), b"")
    except ssl.SSLError as exc:
        if "key values mismatch" in _reason(exc):
            raise StartupError(
                f"--tls-key {config.tls_key} does not belong to --tls-cert {config.tls_cert} (key values mismatch)"
            ) from exc
        raise StartupError(f"--tls-key {config.tls_key} cannot be loaded: {_reason(exc)}") from exc
    client_ca = None
    if config.tls_client_ca is not None:
        client_ca = _read(config.tls_client_ca, "--tls-client-ca", "-----BEGIN CERTIFICATE-----", "certificate")
        _check_certificates(config.tls_client_ca, "--tls-client-ca")
    return TLSMaterial(cert, key, client_ca)


# --- bearer tokens ------------------------------------------------------------------------------------------------


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens of a token file: one per line; blank lines and lines starting with # are skipped.
    StartupError when the file is unreadable, holds no token, or a token is not printable ASCII without spaces
    (what an HTTP/2 header value can carry). The tokens themselves never appear in a message."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise StartupError(f"cannot read --auth-token-file {path}: {exc.strerror or exc}") from exc
    tokens = []
    for number, raw in enumerate(lines, start=1):
        token = raw.strip()
        if not token or token.startswith(b"#"):
            continue
        if not all(0x21 <= byte <= 0x7E for byte in token):
            raise StartupError(
                f"--auth-token-file {path}, line {number}: a token must be printable ASCII without spaces"
            )
        tokens.append(token)
    if not tokens:
        raise StartupError(f"--auth-token-file {path} holds no token (one per line): every call would be refused")
    return tuple(tokens)


Refusal = tuple[grpc.StatusCode, str]

_MISSING: Refusal = (
    grpc.StatusCode.UNAUTHENTICATED,
    "this server requires `authorization: Bearer <token>` metadata on every call (grpc.health.v1 excepted)",
)
_MALFORMED: Refusal = (
    grpc.StatusCode.UNAUTHENTICATED,
    "the authorization metadata must be `Bearer <token>`",
)
_REJECTED: Refusal = (grpc.StatusCode.PERMISSION_DENIED, "the bearer token is not accepted by this server")


class TokenStore:
    """The accepted bearer tokens, read from a file at start and again by `reload()` (SIGHUP)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens = read_tokens(path)
        logger.info("bearer tokens required: %d read from %s", len(self._tokens), path)

    def reload(self) -> bool:
        """Re-read the file; on failure keep the tokens in force (logged). True when the new ones apply."""
        try:
            tokens = read_tokens(self.path)
        except StartupError as exc:
            logger.error("%s; keeping the %d tokens in force", exc, len(self._tokens))
            return False
        self._tokens = tokens
        logger.info("bearer tokens re-read: %d from %s", len(tokens), self.path)
        return True

    def refusal(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Refusal | None:
        """None when the call's metadata carries an accepted token, else the status and message to answer."""
        value = next((v for k, v in metadata or () if k == "authorization"), None)
        if value is None:
            return _MISSING
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if text[: len(_BEARER)].lower() != _BEARER:
            return _MALFORMED
        presented = text[len(_BEARER) :].strip().encode("latin-1", "replace")
        # Compare with every token, always: the time taken says nothing about which tokens exist or how close.
        accepted = False
        for token in self._tokens:
            accepted |= hmac.compare_digest(token, presented)
        return None if accepted else _REJECTED


def refusing(handler: grpc.RpcMethodHandler, refusal: Refusal) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers `refusal` without reading or parsing a request."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(*refusal)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Every call but grpc.health.v1 needs `authorization: Bearer <token>` with a token of `store`:
    missing or malformed -> UNAUTHENTICATED, not accepted -> PERMISSION_DENIED."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIX):
            return handler
        refusal = self._store.refusal(handler_call_details.invocation_metadata)
        if refusal is None:
            return handler
        logger.debug("%s refused: %s", handler_call_details.method, refusal[0].name)
        return refusing(handler, refusal)

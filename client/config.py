"""ClientConfig: where the server is and how to talk to it (timeouts, retries, TLS, metadata, message size).

One frozen object, validated at construction (cnnserve.errors.ConfigError), shared by Client, AsyncClient and
the batch CLI, which builds it from flags and CNNSERVE_* environment variables.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnserve.addresses import is_local_target
from cnnserve.errors import ConfigError
from cnnserve.options import option

#: The address `cnnserve serve` listens on by default.
DEFAULT_TARGET = "127.0.0.1:8001"
#: The server's default message limit (ServerConfig.max_message_bytes; a test keeps the two equal): room for 64
#: RGB 224x224 float32 images (38.5 MB) plus headroom. Requests larger than this are split by the client.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of calls that failed with UNAVAILABLE (server down, restarting, draining or its queue full).

    Only UNAVAILABLE is retried: the request did not run, so trying again is safe for these idempotent calls
    (inference has no side effects). DEADLINE_EXCEEDED is never retried (the caller's time is up), nor is a
    stream that has already produced results. The wait before retry n (0-based) is drawn uniformly from
    [0, min(max_backoff_s, initial_backoff_s * multiplier**n)] ("full jitter"), so many clients that failed
    together do not come back together.
    """

    max_attempts: int = 5  # attempts in all, the first included; 1 turns retries off
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"retry max_attempts must be >= 1 (1 = no retries), got {self.max_attempts}")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(
                f"retry backoff must satisfy 0 < initial_backoff_s <= max_backoff_s, "
                f"got {self.initial_backoff_s} and {self.max_backoff_s}"
            )
        if self.multiplier < 1:
            raise ConfigError(f"retry multiplier must be >= 1, got {self.multiplier}")

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry)
        return (rng or random).uniform(0.0, cap)


NO_RETRIES = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for the channel. All paths are PEM files; none set means the system's root certificates.

    `client_cert` and `client_key` go together (mutual TLS). `server_name` overrides the name checked against
    the server's certificate (for a certificate issued to a name other than the address dialled).
    """

    root_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError("TLS client_cert and client_key go together: give both (mutual TLS) or neither")

    @classmethod
    def from_flags(cls, root_cert: str | None, client_cert: str | None, client_key: str | None) -> TLSConfig | None:
        """The TLS of the --tls-root-cert, --tls-client-cert and --tls-client-key flags; None when none is given."""
        if not (root_cert or client_cert or client_key):
            return None
        paths = [Path(value) if value else None for value in (root_cert, client_cert, client_key)]
        return cls(root_cert=paths[0], client_cert=paths[1], client_key=paths[2])

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, client key, client certificate): the order of grpc.ssl_channel_credentials."""

        def load(path: Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc

        return (
            load(self.root_cert, "root certificate"),
            load(self.client_key, "client key"),
            load(self.client_cert, "client certificate"),
        )


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """The TLS flags of `cnnserve classify` and `cnnserve bench`, declared once (they read no variables)."""

    tls_root_cert: str | None = option(
        None, help="PEM root certificate: use TLS and trust this CA", convert=str, metavar="PEM", env=False
    )
    tls_client_cert: str | None = option(
        None, help="PEM client certificate (mutual TLS, with --tls-client-key)", convert=str, metavar="PEM", env=False
    )
    tls_client_key: str | None = option(
        None, help="PEM key of --tls-client-cert", convert=str, metavar="PEM", env=False
    )

    @property
    def tls(self) -> TLSConfig | None:
        """The TLSConfig these flags name; None when none is given (plaintext)."""
        return TLSConfig.from_flags(self.tls_root_cert, self.tls_client_cert, self.tls_client_key)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How a client reaches a server. Times are seconds; None means no limit."""

    target: str = DEFAULT_TARGET  # "host:port", or any gRPC target ("unix:/path", "dns:///host:port")
    #: Deadline of one call when the call gives none. Retries share it: the call never outlives it.
    timeout_s: float | None = 30.0
    #: How long open() waits for a first connection before raising ServerUnreachable; None: do not wait
    #: (connect on the first call, the gRPC default).
    connect_timeout_s: float | None = 5.0
    #: False: a first connection refused (nothing listens at a host:port target) raises ServerUnreachable at
    #: once. True: open() keeps trying until connect_timeout_s, for a server that is still starting.
    wait_for_server: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TLSConfig | None = None  # None: plaintext (the server's default on loopback)
    #: Sent with every call, e.g. (("authorization", "Bearer <token>"),). Keys must be lowercase ASCII.
    metadata: tuple[tuple[str, str], ...] = ()
    #: Largest message sent or received; the client splits larger requests into several calls.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    #: Most images (or tensor rows) in one request; more are split (the server batches across requests anyway).
    #: The server refuses more than its --max-images-per-request / --max-infer-batch-size, 256 by default.
    max_images_per_request: int = 256
    #: Send an authorization header over plaintext to a non-loopback target anyway (else ConfigError): for a
    #: network that is trusted by other means. Anyone on the path can read and replay the token.
    allow_insecure_token: bool = False

    def __post_init__(self) -> None:
        if not self.target or self.target != self.target.strip():
            raise ConfigError(f"target must be an address like '127.0.0.1:8001', got {self.target!r}")
        for name in ("timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive or None (no limit), got {value}")
        for key, value in self.metadata:
            if not key or key != key.lower() or not key.isascii() or not isinstance(value, str):
                raise ConfigError(f"metadata keys must be non-empty lowercase ASCII with str values, got {key!r}")
        if self.max_message_bytes < 64 * 1024:
            raise ConfigError(f"max_message_bytes must be at least 65536, got {self.max_message_bytes}")
        if self.max_images_per_request < 1:
            raise ConfigError(f"max_images_per_request must be >= 1, got {self.max_images_per_request}")
        sends_credential = any(key == "authorization" for key, _ in self.metadata)
        if sends_credential and self.tls is None and not self.allow_insecure_token and not is_local_target(self.target):
            raise ConfigError(
                f"refusing to send the token in clear text to {self.target}: anyone on the network could read and "
                "replay it. Use TLS (tls=TLSConfig(...), --tls-root-cert) or, where the network is trusted, "
                "allow_insecure_token=True (--allow-insecure-token)"
            )

    @classmethod
    def create(
        cls,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        metadata: Mapping[str, str] | None = None,
        **fields: object,
    ) -> ClientConfig:
        """A config from keyword arguments, with `token` as an "authorization: Bearer ..." header."""
        pairs = dict(metadata or {})
        if token:
            pairs["authorization"] = f"Bearer {token}"
        return cls(target=target, metadata=tuple(pairs.items()), **fields)  # type: ignore[arg-type]


def config_of(target: str | ClientConfig, options: dict[str, Any]) -> ClientConfig:
    """The config of `Client(target, **options)`: a ClientConfig as given, or one made from a target and options."""
    if isinstance(target, ClientConfig):
        if options:
            raise TypeError(f"pass either a ClientConfig or keyword options, not both (got {sorted(options)})")
        return target
    return ClientConfig.create(target, **options)

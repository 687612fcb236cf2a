"""A client's channel: its state (UNOPENED -> OPEN -> CLOSED), options, credentials and service stubs.

Client, AsyncClient and the load generator make their channels from these, so message limits and TLS names
are set one way everywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from cnnserve.client.config import ClientConfig, TLSConfig
from cnnserve.proto import classifier_pb2_grpc as pb_grpc
from cnnserve.proto import grpc_service_pb2_grpc as oip_grpc


class State(enum.Enum):
    """Where a client is in its life: a call opens an UNOPENED one; a CLOSED one stays closed."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Stubs:
    """The three services a client talks to, on one channel (sync or asyncio: the stubs are the same classes)."""

    classifier: pb_grpc.ClassifierStub
    inference: oip_grpc.GRPCInferenceServiceStub
    health: health_pb2_grpc.HealthStub

    @classmethod
    def on(cls, channel: Any) -> Stubs:
        return cls(
            pb_grpc.ClassifierStub(channel),
            oip_grpc.GRPCInferenceServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


def message_size_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """The largest message a channel sends and receives."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def server_name_options(tls: TLSConfig | None) -> list[tuple[str, Any]]:
    """The name checked against the server's certificate, when TLS names one other than the address dialled."""
    return [("grpc.ssl_target_name_override", tls.server_name)] if tls is not None and tls.server_name else []


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    return [
        *message_size_options(config.max_message_bytes),
        # Reconnect on the retry policy's time scale: gRPC's own default backs off up to 120 s, so a server that
        # restarted would stay unreachable to this channel long after it came back.
        ("grpc.initial_reconnect_backoff_ms", int(config.retry.initial_backoff_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(config.retry.initial_backoff_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(config.retry.max_backoff_s * 1000)),
        *server_name_options(config.tls),
    ]


def credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials from the config, or None for a plaintext channel."""
    if config.tls is None:
        return None
    root, key, cert = config.tls.read()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)

"""What Client and AsyncClient share: channel settings, stubs, deadlines, retry decisions and result checks.

Neither client does its own arithmetic on deadlines or backoff: both call these, so the sync and asyncio
behaviour cannot drift apart.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2_grpc

from cnnserve.client.config import ClientConfig, RetryPolicy
from cnnserve.client.errors import ClientError, InvalidArgument, Unavailable
from cnnserve.client.images import ImageItem, ImagesInput, chunk, prepare
from cnnserve.client.results import Classification
from cnnserve.proto import classifier_pb2_grpc as pb_grpc
from cnnserve.proto import grpc_service_pb2_grpc as oip_grpc

log = logging.getLogger(__name__)

OnError = Literal["raise", "return"]


class State(enum.Enum):
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


def make_config(target: str | ClientConfig, options: dict[str, Any]) -> ClientConfig:
    if isinstance(target, ClientConfig):
        if options:
            raise TypeError(f"pass either a ClientConfig or keyword options, not both (got {sorted(options)})")
        return target
    return ClientConfig.create(target, **options)


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        # Reconnect on the retry policy's time scale: gRPC's own default backs off up to 120 s, so a server that
        # restarted would stay unreachable to this channel long after it came back.
        ("grpc.initial_reconnect_backoff_ms", int(config.retry.initial_backoff_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(config.retry.initial_backoff_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(config.retry.max_backoff_s * 1000)),
    ]
    if config.tls is not None and config.tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name))
    return options


def credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials from the config, or None for a plaintext channel."""
    if config.tls is None:
        return None
    root, key, cert = config.tls.read()
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


def deadline_of(timeout: float | None, config: ClientConfig) -> float | None:
    """Absolute time.monotonic() by which a whole method call (all its RPCs and retries) must end."""
    seconds = config.timeout_s if timeout is None else timeout
    return None if seconds is None else time.monotonic() + seconds


def remaining(deadline: float | None) -> float | None:
    """The timeout of the next RPC. A deadline already past still sends (with 1 ms), so that gRPC itself reports
    DEADLINE_EXCEEDED."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def retry_pause(policy: RetryPolicy, error: ClientError, attempt: int, deadline: float | None) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when `error` must be raised now.

    Only UNAVAILABLE is retried (the server did not run the request); never once the attempts are spent or when
    the wait would outlive the call's deadline.
    """
    if not isinstance(error, Unavailable) or attempt + 1 >= policy.max_attempts:
        return None
    pause = policy.backoff_s(attempt)
    if deadline is not None and time.monotonic() + pause >= deadline:
        return None
    log.info("%s; retry %d of %d in %.3f s", error, attempt + 1, policy.max_attempts - 1, pause)
    return pause


def plan(images: ImagesInput, config: ClientConfig, on_error: OnError) -> list[list[ImageItem]]:
    """The images of one classify() call, read and grouped into requests that fit the message limit."""
    items = prepare(images, read_errors=on_error == "return")
    return list(chunk(items, max_bytes=config.max_message_bytes, max_count=config.max_images_per_request))


def finish(results: list[Classification], on_error: OnError) -> list[Classification]:
    """The results of classify(), or InvalidArgument naming the first failed image when on_error is "raise"."""
    failed = [r for r in results if not r.ok]
    if failed and on_error == "raise":
        first = failed[0]
        raise InvalidArgument(
            f"{len(failed)} of {len(results)} images could not be classified; first: {first.id}: {first.error} "
            f"(pass on_error='return' to get the other results)",
            method="Classify",
            details=first.error,
        )
    return results


#: Put on a stream's plan queue after the last batch.
END_OF_BATCHES = None

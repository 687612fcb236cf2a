"""A client's channel (cnnserve.client.channel): the options it is made with hold on a real server, and its
state moves UNOPENED -> OPEN -> CLOSED."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from cnnserve.client import Client, State, wire
from cnnserve.client import errors as E
from cnnserve.client.channel import Stubs, channel_options, message_size_options, server_name_options
from cnnserve.client.config import ClientConfig, TLSConfig
from cnnserve.server.app import RunningServer

from .conftest import FashionModel


def test_the_message_limit_is_enforced_by_the_channel(
    running_server: RunningServer, fashion_model: FashionModel
) -> None:
    pixels = np.zeros((100, 1, 28, 28), np.uint8)  # 78,400 bytes: over a 64 KiB limit
    request = wire.infer_request(pixels, model=fashion_model.name, version=None, input_name="input",
                                 output_name="logits")  # fmt: skip
    small = grpc.insecure_channel(running_server.address, options=message_size_options(65536))
    with small, pytest.raises(grpc.RpcError) as refused:
        Stubs.on(small).inference.ModelInfer(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(running_server.address, options=message_size_options(1 << 20)) as large:
        assert wire.infer_output(Stubs.on(large).inference.ModelInfer(request, timeout=30), "logits").shape == (100, 10)


def test_options_follow_the_config() -> None:
    options = dict(channel_options(ClientConfig(max_message_bytes=1 << 20)))
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 1 << 20
    assert options["grpc.max_reconnect_backoff_ms"] == 2000  # the retry policy's max_backoff_s
    assert "grpc.ssl_target_name_override" not in options
    assert server_name_options(TLSConfig(server_name="cnnserve.internal")) == [
        ("grpc.ssl_target_name_override", "cnnserve.internal")
    ]


def test_a_client_opens_on_first_use_and_stays_closed(running_server: RunningServer) -> None:
    client = Client(running_server.address)
    assert client.state is State.UNOPENED
    assert client.ready() and client.state is State.OPEN
    client.close()
    assert client.state is State.CLOSED
    with pytest.raises(E.ClientClosedError, match="closed and cannot be reopened"):
        client.ready()

"""The client's error tree (cnnserve.client.errors): a real server's statuses become its classes, each error's
`code` is always its status (the server's own name when one answered), and the tree has one root."""

from __future__ import annotations

import grpc
import pytest

from cnnserve.client import errors as E
from cnnserve.client import wire
from cnnserve.client.channel import Stubs
from cnnserve.errors import CnnserveError
from cnnserve.server.app import RunningServer


def test_a_real_failed_call_maps_to_its_class_with_the_call_and_the_servers_words(
    running_server: RunningServer,
) -> None:
    request = wire.model_ready_request("no-such-model", None)
    with grpc.insecure_channel(running_server.address) as channel, pytest.raises(grpc.RpcError) as raw:
        Stubs.on(channel).inference.ModelReady(request, timeout=30)
    error = E.rpc_error(raw.value, method="ModelReady", target=running_server.address)
    assert isinstance(error, E.NotFound) and error.code == error.status == "NOT_FOUND"
    assert error.method == "ModelReady" and error.details == raw.value.details()
    assert str(error).startswith(f"ModelReady to {running_server.address} failed with NOT_FOUND: ")


def test_code_is_the_servers_status_or_the_classs() -> None:
    unauthenticated = E.status_error("UNAUTHENTICATED", "no token", "Classify", "h:1")
    assert isinstance(unauthenticated, E.PermissionDenied) and unauthenticated.code == "UNAUTHENTICATED"
    assert isinstance(E.status_error("DATA_LOSS", "x", "Classify", "h:1"), E.Internal)
    assert E.InvalidArgument("found before sending").code == "INVALID_ARGUMENT"
    assert E.refused("h:1").code == "UNAVAILABLE" and E.BenchError("no server").code == "UNAVAILABLE"


def test_every_client_error_is_on_one_tree() -> None:
    classes = [c for c in vars(E).values() if isinstance(c, type) and c.__module__ == E.__name__]
    assert len(classes) > 10 and all(issubclass(c, E.ClientError) and issubclass(c, CnnserveError) for c in classes)
    assert issubclass(E.ServerUnreachable, E.Unavailable) and issubclass(E.BenchError, E.Unavailable)

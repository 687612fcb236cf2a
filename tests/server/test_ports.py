"""check_bindable: a port in use (or an address that is not ours) is a StartupError naming the fix, asked before
any model loads; port 0 and a free port pass."""

from __future__ import annotations

import socket

import pytest

from cnnserve.server.errors import StartupError
from cnnserve.server.ports import PORT_HINT, check_bindable


def test_a_port_in_use_is_a_startup_error_naming_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use") as failure:
            check_bindable("127.0.0.1", port)
    assert PORT_HINT in str(failure.value)


def test_port_zero_and_a_free_port_pass() -> None:
    check_bindable("127.0.0.1", 0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_bindable("127.0.0.1", port)  # closed again: free


def test_an_address_that_cannot_be_resolved_is_a_startup_error() -> None:
    with pytest.raises(StartupError, match="expected an interface address"):
        check_bindable("no-such-host.invalid", 1)

"""Waiting for a first connection: fail at once when it is refused, or keep trying while a server starts (wait).

A refused connection puts a gRPC channel in TRANSIENT_FAILURE within milliseconds, but so can a hiccup that the
next attempt gets past (a TLS handshake on a busy machine). So a failure ends the wait at once only when a plain
TCP connect to the target is refused too, i.e. nothing listens there; otherwise the wait goes on as before.
"""

from __future__ import annotations

import asyncio
import queue
import re
import socket
import time
from typing import Literal

import grpc

#: "ready": connected; "refused": nothing listens there (not waiting); "timeout": nothing within the time given.
Outcome = Literal["ready", "refused", "timeout"]

_READY = grpc.ChannelConnectivity.READY
_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
# "host:port", "[v6]:port", "dns:///host:port", "ipv4:a.b.c.d:port": the targets whose address a probe can try
_HOST_PORT = re.compile(r"(?:dns:///?|ipv4:|ipv6:)?\[?(?P<host>[^\[\]/]+?)\]?:(?P<port>\d+)")
_PROBE_S = 1.0


def nothing_listens(target: str) -> bool:
    """True when a TCP connect to the host:port `target` is refused; False when it is accepted, when it fails any
    other way, or when `target` is no host:port (a unix socket, a resolver scheme)."""
    found = _HOST_PORT.fullmatch(target)
    if found is None:
        return False
    try:
        with socket.create_connection((found["host"], int(found["port"])), timeout=_PROBE_S):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def wait_connected(channel: grpc.Channel, target: str, timeout_s: float, *, wait: bool = False) -> Outcome:
    """Connect `channel` (to `target`); within `timeout_s`, READY, or (unless `wait`) a refusal."""
    states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
    watch = states.put
    deadline = time.monotonic() + timeout_s
    channel.subscribe(watch, try_to_connect=True)
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                state = states.get(timeout=left)
            except queue.Empty:
                break
            if state is _READY:
                return "ready"
            if state is _FAILURE and not wait and nothing_listens(target):
                return "refused"
    finally:
        channel.unsubscribe(watch)
    return "timeout"


async def wait_connected_aio(
    channel: grpc.aio.Channel, target: str, timeout_s: float, *, wait: bool = False
) -> Outcome:
    """As wait_connected, for an asyncio channel."""
    loop = asyncio.get_running_loop()

    async def until_settled() -> Outcome:
        while True:
            state = channel.get_state(try_to_connect=True)
            if state is _READY:
                return "ready"
            if state is _FAILURE and not wait and await loop.run_in_executor(None, nothing_listens, target):
                return "refused"
            await channel.wait_for_state_change(state)

    try:
        return await asyncio.wait_for(until_settled(), timeout_s)
    except TimeoutError:
        return "timeout"

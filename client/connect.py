"""Waiting for a first connection: fail at once when it is refused, or keep trying while a server starts (wait).

A refused connection puts a gRPC channel in TRANSIENT_FAILURE within milliseconds; without `wait` that is the
answer, so a client of a server that is down says so at once instead of after its whole connect timeout.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

import grpc

#: "ready": connected; "failed": refused or failed (not waiting); "timeout": nothing within the time given.
Outcome = Literal["ready", "failed", "timeout"]

_READY = grpc.ChannelConnectivity.READY
_FAILURE = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN


def wait_connected(channel: grpc.Channel, timeout_s: float, *, wait: bool = False) -> Outcome:
    """Connect `channel`; within `timeout_s`, READY, or (unless `wait`) the first failed attempt."""
    outcome: list[Outcome] = []
    done = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state is _READY:
            outcome.append("ready")
        elif state is _SHUTDOWN or (state is _FAILURE and not wait):
            outcome.append("failed")
        else:
            return
        done.set()

    channel.subscribe(watch, try_to_connect=True)
    try:
        done.wait(timeout_s)
    finally:
        channel.unsubscribe(watch)
    return outcome[0] if outcome else "timeout"


async def wait_connected_aio(channel: grpc.aio.Channel, timeout_s: float, *, wait: bool = False) -> Outcome:
    """As wait_connected, for an asyncio channel."""

    async def until_settled() -> Outcome:
        while True:
            state = channel.get_state(try_to_connect=True)
            if state is _READY:
                return "ready"
            if state is _SHUTDOWN or (state is _FAILURE and not wait):
                return "failed"
            await channel.wait_for_state_change(state)

    try:
        return await asyncio.wait_for(until_settled(), timeout_s)
    except TimeoutError:
        return "timeout"

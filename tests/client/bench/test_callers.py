"""The closed-loop callers of `cnnserve bench` (cnnserve.client.bench.callers) against a real server: refused
requests are counted by status, never as samples; callers are spread evenly over processes."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from cnnserve.client import wire
from cnnserve.client.bench.callers import Rpc, WorkerJob, WorkerResult, run_job, split_callers
from cnnserve.client.bench.workloads import MODEL_INFER_METHOD, MODEL_STREAM_INFER_METHOD, Workload
from cnnserve.server.app import RunningServer


@pytest.fixture(scope="module")
def model(running_server: RunningServer) -> str:
    """A READY model of the running server (a LeNet when there is one: the cheapest to serve)."""
    ready = [s.name for s in running_server.state.repository.statuses() if s.state == "READY"]
    return next((name for name in ready if "lenet" in name), ready[0])


@pytest.mark.parametrize("rpc", ["unary", "stream"])
def test_refused_requests_are_counted_by_status(running_server: RunningServer, model: str, rpc: Rpc) -> None:
    """A request whose raw tensor is 5 bytes short of its shape: every request fails (as a call's status, or in
    its stream answer), and none is a throughput sample."""
    request = wire.infer_request(
        np.zeros((1, 1, 28, 28), np.uint8), model=model, version=None, input_name="input", output_name=None
    )
    request.raw_input_contents[0] = bytes(28 * 28 - 5)
    refused = Workload(MODEL_INFER_METHOD, MODEL_STREAM_INFER_METHOD, request.SerializeToString(), images_per_request=1)

    async def go() -> WorkerResult:
        now = time.monotonic()
        # 1.5 s: on a loaded machine the first answer of a new stream took more than the 0.5 s this had before
        job = WorkerJob(refused, callers=2, rpc=rpc, measure_from=now, measure_until=now + 1.5)
        async with grpc.aio.insecure_channel(running_server.address) as channel:
            return await run_job([channel], job, timeout_s=5.0)

    result = asyncio.run(go())

    assert result.latencies_s == b""
    assert set(result.errors) == {"INVALID_ARGUMENT"} and result.errors["INVALID_ARGUMENT"] > 0


def test_callers_are_spread_evenly() -> None:
    assert split_callers(1, 4) == [1]
    assert split_callers(32, 2) == [16, 16]
    assert split_callers(7, 3) == [3, 2, 2]

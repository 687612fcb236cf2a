"""`cnnserve serve --workers 2` as a user runs it: two processes on one port, each answering, one SIGTERM stops both.

Real processes, real sockets: the listening sockets are found in /proc (Linux only, like SO_REUSEPORT itself).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cnnserve.process import EXIT_FAILURE, EXIT_OK, EXIT_STARTUP
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError
from cnnserve.server.workers import reserve_port, worker_configs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing and /proc are Linux's"),
]


def worker_pids(pid: int) -> list[int]:
    """The worker processes of the supervisor `pid` (not multiprocessing's resource tracker)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state (0A) on `port`, IPv4 and IPv6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def infer(port: int, make_images: Callable[..., np.ndarray]) -> np.ndarray:
    """One ModelInfer on a connection of its own (a channel with a local subchannel pool)."""
    pixels = make_images(1)
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(pixels.shape))
    request = pb.ModelInferRequest(model_name="linear", inputs=[tensor], raw_input_contents=[pixels.tobytes()])
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32)


def test_two_workers_listen_on_one_port_answer_and_stop_on_one_sigterm(
    serve_process: Callable[..., Any], linear_repository: Path, make_images: Callable[..., np.ndarray]
) -> None:
    server = serve_process("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "-1",
                           "--workers", "2")  # fmt: skip
    port = server.wait_listening()
    wait_for(lambda: sum(f"listening on 127.0.0.1:{port} " in line for line in server.lines) == 2)
    workers = worker_pids(server.process.pid)
    listening = listening_inodes(port)

    assert len(workers) == 2
    assert all(socket_inodes(pid) & listening for pid in workers), "each worker holds a listening socket"
    answers = [infer(port, make_images) for _ in range(8)]  # 8 connections: the kernel spreads them
    assert all(np.array_equal(a, answers[0]) for a in answers)

    server.process.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) == EXIT_OK, server.stderr
    assert "SIGTERM received: passing it to 2 workers" in server.stderr
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_that_dies_stops_the_others_and_the_server_fails(
    serve_process: Callable[..., Any], linear_repository: Path
) -> None:
    server = serve_process("--model-repository", str(linear_repository), "--port", "0", "--metrics-port", "-1",
                           "--workers", "2")  # fmt: skip
    port = server.wait_listening()
    wait_for(lambda: sum(f"listening on 127.0.0.1:{port} " in line for line in server.lines) == 2)
    first, second = worker_pids(server.process.pid)

    os.kill(first, signal.SIGKILL)

    assert server.wait(timeout=30) == EXIT_FAILURE
    assert "stopping the other workers" in server.stderr
    assert not Path(f"/proc/{second}").exists()


def test_a_port_in_use_is_a_startup_error(serve_process: Callable[..., Any], linear_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            reserve_port("127.0.0.1", port)
        server = serve_process("--model-repository", str(linear_repository), "--port", str(port),
                               "--metrics-port", "-1", "--workers", "2")  # fmt: skip
        assert server.wait(timeout=30) == EXIT_STARTUP
    assert f"cannot listen on 127.0.0.1:{port}" in server.stderr


def test_workers_share_the_instances_and_get_a_metrics_port_each(linear_repository: Path) -> None:
    config = ServerConfig(model_repository=linear_repository, workers=2, instances=4, metrics_port=9100)

    configs = worker_configs(config, port=8123)

    assert [(c.port, c.workers, c.instances, c.metrics_port) for c in configs] == [
        (8123, 1, 2, 9100),
        (8123, 1, 2, 9101),
    ]
    off = worker_configs(ServerConfig(model_repository=linear_repository, workers=3, metrics_port=-1), port=1)
    assert {c.metrics_port for c in off} == {-1} and all(c.instances >= 1 for c in off)

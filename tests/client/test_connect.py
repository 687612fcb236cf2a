"""A first connection: refused means an error at once (library, `cnnserve classify`, `cnnserve bench`); waiting
for a server that is starting only when asked (`wait_for_server`, --wait); and the CLI's words for no default."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from cnnserve.client import AsyncClient, Client
from cnnserve.client import errors as E
from cnnserve.client.bench.loadgen import main as bench_main
from cnnserve.client.classify.batch import main as classify_main
from cnnserve.process import EXIT_OK, EXIT_STARTUP
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig


def test_a_refused_connection_fails_at_once_not_after_the_connect_timeout(free_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(E.ServerUnreachable, match=r"the connection was refused.*pass --wait"):
        Client(f"127.0.0.1:{free_port}", connect_timeout_s=30).open()
    assert time.monotonic() - started < 3

    async def open_async() -> None:
        await AsyncClient(f"127.0.0.1:{free_port}", connect_timeout_s=30).open()

    started = time.monotonic()
    with pytest.raises(E.ServerUnreachable, match="the connection was refused"):
        asyncio.run(open_async())
    assert time.monotonic() - started < 3


def test_a_failure_where_something_listens_is_not_taken_for_a_refusal() -> None:
    # A listener that is no gRPC server: each attempt fails (TRANSIENT_FAILURE), as a TLS handshake that does not
    # succeed at first would, but something listens, so the client waits its connect timeout instead.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.1)
        target, closing = f"127.0.0.1:{listener.getsockname()[1]}", threading.Event()

        def hang_up() -> None:  # accept each connection and close it at once
            while not closing.is_set():
                try:
                    listener.accept()[0].close()
                except TimeoutError:
                    continue

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            with pytest.raises(E.ServerUnreachable, match="no connection within 1 s"):
                Client(target, connect_timeout_s=1).open()
        finally:
            closing.set()
            thread.join(5)
        assert time.monotonic() - started >= 0.9


def test_wait_for_server_connects_to_a_server_that_starts_later(free_port: int, served_repository: Path) -> None:
    config = ServerConfig(model_repository=served_repository, port=free_port, metrics_port=-1, grace_period_s=1)
    up, done = threading.Event(), threading.Event()

    def serve_later() -> None:
        time.sleep(0.5)
        with serve_in_thread(config):
            up.set()
            done.wait(30)

    thread = threading.Thread(target=serve_later, daemon=True)
    thread.start()
    try:
        with Client(f"127.0.0.1:{free_port}", connect_timeout_s=30, wait_for_server=True) as client:
            assert up.is_set() and client.health().serving
    finally:
        done.set()
        thread.join(30)


def test_classify_and_bench_with_the_server_down_stop_at_once_in_one_line(
    free_port: int, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = f"127.0.0.1:{free_port}"
    started = time.monotonic()
    assert classify_main([str(tmp_path), "--server", server]) == EXIT_STARTUP
    assert time.monotonic() - started < 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert server in line and "--wait" in line

    started = time.monotonic()
    assert bench_main(["--server", server, "--duration", "1s", "--warmup", "0s", "--concurrency", "1"]) == EXIT_STARTUP
    assert time.monotonic() - started < 3
    out, err = capsys.readouterr()
    assert out == ""  # no table header before the failure
    (line,) = err.strip().splitlines()
    assert server in line and "refused" in line and "--wait" in line


def test_classify_names_the_cli_flag_and_ready_models_when_the_server_has_no_default(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    for name in ("fashion_lenet", "fashion_cnn_bn"):
        shutil.copytree(repo_root / "models" / name, models / name)
    samples = repo_root / "samples" / "fashion-mnist"
    config = ServerConfig(model_repository=models, port=0, metrics_port=-1, grace_period_s=1)
    with serve_in_thread(config) as server:
        assert classify_main([str(samples), "--server", server.address, "-q"]) == EXIT_STARTUP
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.endswith("has no default model; pass --model, one of: fashion_cnn_bn, fashion_lenet"), line
        assert "model=" not in line
    shutil.copy(repo_root / "models" / "default", models / "default")  # the shipped repository's default
    with serve_in_thread(config) as server:
        out = tmp_path / "rows.csv"
        assert classify_main([str(samples), "--server", server.address, "-q", "--output", str(out)]) == EXIT_OK
    assert len(out.read_text().splitlines()) == 21  # header + the 20 samples

"""Start-up papercuts: a port in use fails before any model loads, in one line of ours; the default model rule."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cnnserve.process import EXIT_STARTUP
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.server.default_model import DEFAULT_FILE, read_default_file
from cnnserve.server.errors import ModelNotFoundError, StartupError
from cnnserve.server.repository import ModelRepository


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_in_use_is_one_line_naming_the_fix_and_no_model_is_loaded_first(
    serve_process: Callable[..., Any], linear_repository: Path, busy_port: int
) -> None:
    started = time.monotonic()
    server = serve_process(
        *("--model-repository", str(linear_repository), "--port", str(busy_port), "--metrics-port", "-1")
    )
    assert server.wait(30) == EXIT_STARTUP
    elapsed = time.monotonic() - started
    assert server.lines == [
        f"cnnserve serve: cannot listen on 127.0.0.1:{busy_port}: the port is in use; choose another --port "
        "(0 picks a free one)"
    ], server.stderr
    assert "add_port" not in server.stderr and "READY" not in server.stderr
    assert elapsed < 15, elapsed


def test_a_port_in_use_fails_before_the_repository_is_read(busy_port: int, tmp_path: Path) -> None:
    # The repository does not even exist: the port is what is reported, since it is checked first.
    config = ServerConfig(model_repository=tmp_path / "missing", port=busy_port, metrics_port=-1)
    with pytest.raises(StartupError, match="the port is in use; choose another --port"), serve_in_thread(config):
        pass


def test_the_repository_default_file_names_the_default_model(write_version: Callable[..., Path]) -> None:
    write_version("alpha")
    root = write_version("beta").parents[1]
    (root / DEFAULT_FILE).write_text("# the model for requests that name none\nbeta\n")
    repository = ModelRepository.load(ServerConfig(model_repository=root, max_batch_size=8))
    try:
        assert repository.default_model_name() == "beta"
        assert [s.name for s in repository.statuses()] == ["alpha", "beta"]  # the file is not a model
    finally:
        repository.close()
    flagged = ModelRepository.load(ServerConfig(model_repository=root, max_batch_size=8, default_model="alpha"))
    try:
        assert flagged.default_model_name() == "alpha"  # the flag wins over the file
    finally:
        flagged.close()


def test_a_default_file_naming_no_model_of_the_repository_stops_the_start(write_version: Callable[..., Path]) -> None:
    write_version("alpha")
    root = write_version("beta").parents[1]
    (root / DEFAULT_FILE).write_text("gamma\n")
    with pytest.raises(StartupError, match=r"default names 'gamma', which is not in .*; it has: alpha, beta"):
        ModelRepository.load(ServerConfig(model_repository=root, max_batch_size=8))
    (root / DEFAULT_FILE).write_text("alpha\nbeta\n")
    with pytest.raises(StartupError, match=r"must hold one model name"):
        ModelRepository.load(ServerConfig(model_repository=root, max_batch_size=8))


def test_without_a_default_the_message_lists_only_ready_models(write_version: Callable[..., Path]) -> None:
    write_version("alpha")
    write_version("broken", sha256="0" * 64)
    root = write_version("beta").parents[1]
    repository = ModelRepository.load(ServerConfig(model_repository=root, max_batch_size=8))
    try:
        with pytest.raises(ModelNotFoundError, match=r"name one of the ready models: alpha, beta$"):
            repository.default_model_name()
    finally:
        repository.close()


def test_the_shipped_repository_names_fashion_lenet_its_default(repo_root: Path) -> None:
    models = repo_root / "models"
    assert read_default_file(models) == "fashion_lenet"
    assert (models / "fashion_lenet").is_dir()

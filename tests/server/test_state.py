"""ServerState: the server's phase (STARTING, SERVING, DRAINING, STOPPED) and what it says about readiness."""

from __future__ import annotations

from pathlib import Path

from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.server.repository import ModelRepository
from cnnserve.server.state import Phase, ServerState


def test_draining_makes_the_server_not_ready(linear_repository: Path) -> None:
    config = ServerConfig(model_repository=linear_repository, max_batch_size=8)
    repository = ModelRepository.load(config)
    state = ServerState(config, repository, phase=Phase.SERVING)
    try:
        assert state.ready and state.model_ready("linear") and not state.draining
        state.begin_draining()
        assert not state.ready and not state.model_ready("linear")
        assert state.draining and state.closing.is_set() and state.phase is Phase.DRAINING
        assert repository.ready  # the models themselves are still fine: the phase says no
    finally:
        repository.close()


def test_a_server_goes_through_its_phases(linear_repository: Path) -> None:
    config = ServerConfig(model_repository=linear_repository, port=0, metrics_port=-1, grace_period_s=1.0)
    with serve_in_thread(config) as server:
        state = server.state
        assert state.phase is Phase.SERVING and state.ready
    assert state.phase is Phase.STOPPED and state.draining and not state.ready

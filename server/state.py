"""ServerState: what the services share (config, models, metrics, model control) and the server's phase, the one
place that says whether it serves or drains.

    STARTING --> SERVING --> DRAINING --> STOPPED
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cnnserve import __version__
from cnnserve.server.config import ServerConfig
from cnnserve.server.repository import ModelRepository

if TYPE_CHECKING:
    from cnnserve.server.lifecycle import ModelController
    from cnnserve.server.metrics import ServerMetrics


class Phase(enum.Enum):
    STARTING = "starting"  # loading models, binding ports: nothing is served yet
    SERVING = "serving"
    DRAINING = "draining"  # new requests refused with UNAVAILABLE, accepted ones finish
    STOPPED = "stopped"


@dataclass
class ServerState:
    """What the services get: the config, the models, the metrics, model control, and the server's phase."""

    config: ServerConfig
    repository: ModelRepository
    metrics: ServerMetrics | None = None
    controller: ModelController | None = None  # loads, swaps and unloads versions (--model-control-mode)
    peer_sockets: tuple[str, ...] = ()  # --workers: the other workers' control sockets (cnnserve.server.control)
    server_name: str = "cnnserve"
    server_version: str = field(default=__version__)
    phase: Phase = Phase.STARTING
    # Set when draining begins: open streams answer what they have read, then end with UNAVAILABLE.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def draining(self) -> bool:
        """True once a stop was requested: services refuse new requests with DrainingError."""
        return self.phase is Phase.DRAINING or self.phase is Phase.STOPPED

    @property
    def ready(self) -> bool:
        """Serving, and at least one version READY (loaded, and its batches not failing)."""
        return self.phase is Phase.SERVING and self.repository.ready

    def model_ready(self, name: str) -> bool:
        """Serving, and the model has a READY version (loaded, batches not failing)."""
        return self.phase is Phase.SERVING and self.repository.model_ready(name)

    def begin_draining(self) -> None:
        """From now on every request is refused with DrainingError and no model changes; queued requests still run
        and open streams end once their requests read so far are answered."""
        self.phase = Phase.DRAINING
        self.repository.stop_accepting()
        if self.controller is not None:
            self.controller.refuse_changes()
        self.closing.set()

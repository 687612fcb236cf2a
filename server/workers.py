"""`cnnserve serve --workers N`: N server processes behind one port (SO_REUSEPORT), and the supervisor over them.

One Python process serves gRPC with at most one core's worth of Python: its event loop holds the GIL for every
request's protobuf and asyncio work, while onnxruntime runs beside it. Where that core is the limit (small models,
many small requests), more processes use more cores. Each worker is a whole server (its own event loop, batchers,
onnxruntime sessions and metrics endpoint) bound to the same port with SO_REUSEPORT; the kernel spreads incoming
connections over them, so one client connection always talks to one worker.

With --model-control-mode poll every worker polls the repository itself; with explicit, each worker gets a Unix
socket in a private temporary folder, and a load or unload that reaches one worker is forwarded to the others
(cnnserve.server.control).

The supervisor forwards SIGTERM/SIGINT to the workers (each drains as a single server does) and exits 0 once all
have; a second signal is forwarded too (workers then exit at once). With --auth-token-file it forwards SIGHUP as
well, so every worker re-reads the tokens. A worker that dies on its own stops the others
and the supervisor exits with its code: half a server is worse than a restart by whoever runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import tempfile
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from cnnserve.process import EXIT_FAILURE, EXIT_OK, configure_logging
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import StartupError
from cnnserve.server.ports import PORT_HINT

logger = logging.getLogger(__name__)


def worker_configs(config: ServerConfig, port: int) -> list[ServerConfig]:
    """The config of each worker: the shared `port`, a share of the instances, a metrics port each.

    --instances is the total across workers (each gets instances // workers, at least 1), so the default (one
    per core plus one) stays about one per core. Metrics: worker i listens on metrics_port + i (0: each an
    ephemeral port; -1: none).
    """
    workers = config.workers
    instances = max(1, config.instances // workers)

    def metrics_port(index: int) -> int:
        return config.metrics_port + index if config.metrics_port > 0 else config.metrics_port

    return [
        dataclasses.replace(config, workers=1, port=port, metrics_port=metrics_port(i), instances=instances)
        for i in range(workers)
    ]


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind `host:port` (0: a free port) with SO_REUSEPORT and keep it bound, not listening, so the workers can
    join it and no unrelated process can take it meanwhile. StartupError when something already uses it."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    address = (host.strip("[]"), port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # without SO_REUSEPORT: fails if anyone holds it
        try:
            probe.bind(address)
        except OSError as exc:
            hint = f"; {PORT_HINT}" if exc.errno == errno.EADDRINUSE else ""
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from exc
        if port == 0:
            address = (address[0], probe.getsockname()[1])
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind(address)
    return reserved


def _run_worker(config: ServerConfig, index: int, workers: int, sockets: tuple[str, ...] = ()) -> None:
    """A worker process: its own process group (a terminal's Ctrl-C reaches the supervisor only, which forwards
    it once), then the ordinary single-process server on the shared port."""
    os.setpgrp()
    from cnnserve.server.app import run_server

    configure_logging(1)
    logger.info("worker %d of %d starting (pid %d)", index + 1, workers, os.getpid())
    own = sockets[index] if sockets else None
    peers = tuple(path for i, path in enumerate(sockets) if i != index)
    sys.exit(run_server(config, reuse_port=True, control_socket=own, peer_sockets=peers))


def supervise(config: ServerConfig) -> int:
    """Run `config.workers` servers on one port until they stop; the exit code of `cnnserve serve`."""
    reserved = reserve_port(config.host, config.port)
    port = reserved.getsockname()[1]
    context = mp.get_context("spawn")  # a fresh interpreter each: no inherited gRPC or onnxruntime state
    explicit = config.model_control_mode == "explicit"
    control_dir = tempfile.TemporaryDirectory(prefix="cnnserve-control-") if explicit else None
    sockets = (
        tuple(os.path.join(control_dir.name, f"worker-{i}.sock") for i in range(config.workers)) if control_dir else ()
    )
    workers: list[BaseProcess] = [
        context.Process(target=_run_worker, args=(worker, i, config.workers, sockets), name=f"cnnserve-worker-{i}")
        for i, worker in enumerate(worker_configs(config, port))
    ]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        logger.warning("%s received: passing it to %d workers", signal.Signals(signum).name, len(workers))
        for process in workers:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def forward_hangup(signum: int, frame: FrameType | None) -> None:
        logger.info("SIGHUP received: passing it to %d workers (they re-read the token file)", len(workers))
        for process in workers:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    if config.auth_token_file is not None:
        # Ignored while the workers start: they inherit SIG_IGN (a Python handler does not survive exec), so a
        # SIGHUP that comes before a worker has its own handler cannot kill it; it reads the file at start anyway.
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        for process in workers:
            process.start()
        if config.auth_token_file is not None:
            signal.signal(signal.SIGHUP, forward_hangup)
        logger.info("%d workers serving %s:%d (SO_REUSEPORT)", len(workers), config.host, port)
        failure = EXIT_OK
        running = list(workers)
        while running:
            for sentinel in wait([p.sentinel for p in running]):
                process = next(p for p in running if p.sentinel == sentinel)
                process.join()
                running.remove(process)
                if process.exitcode != 0 and failure == EXIT_OK:
                    failure = process.exitcode if process.exitcode and process.exitcode > 0 else EXIT_FAILURE
                    if not stopping:
                        logger.error("%s exited with %s: stopping the other workers", process.name, process.exitcode)
                        forward(signal.SIGTERM, None)
        return failure
    finally:
        reserved.close()
        if control_dir is not None:
            control_dir.cleanup()
        for signum, handler in previous.items():
            signal.signal(signum, handler)

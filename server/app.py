"""The server's lifecycle: `cnnserve serve` (main), Server (start, serve, drain, stop) and serve_in_thread for tests.

Start: check the gRPC port is free, load and warm the model versions (every one, or the --load-model ones in
explicit model control), start metrics, bind gRPC, register the services, report SERVING, then start polling
(--model-control-mode poll).
SIGTERM or SIGINT only sets an event; the first one drains (health NOT_SERVING, new requests refused with
UNAVAILABLE, open streams closed with UNAVAILABLE once their requests in flight are answered, accepted ones finish
within --grace-period-s) and then main returns 0; a second one exits at once. A failure before serving (repository
missing, no version ready, port in use, a TLS or token file wrong, CUDA demanded and absent) is one line on stderr
and exit code EXIT_STARTUP. With --auth-token-file, SIGHUP re-reads the tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc

from cnnserve import __version__
from cnnserve.errors import ConfigError
from cnnserve.process import EXIT_FAILURE, EXIT_OK, configure_logging, fail
from cnnserve.server import classifier_service, control, health, inference_service, ports, security, transport
from cnnserve.server.config import ServerConfig, add_arguments, config_from_args
from cnnserve.server.errors import StartupError
from cnnserve.server.guard import CallLimit, guard_server
from cnnserve.server.lifecycle import ModelController
from cnnserve.server.metrics import ServerMetrics
from cnnserve.server.repository import ModelRepository
from cnnserve.server.state import Phase, ServerState

logger = logging.getLogger(__name__)

# Draining answers UNAVAILABLE at least this long, so requests already on the wire at the signal are refused
# (retryably) rather than cancelled by gRPC's stop.
_DRAIN_LINGER_S = 0.1


class Server:
    """One gRPC server over one model repository. `run()` serves until `request_stop()`, then drains."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        reuse_port: bool = False,
        control_socket: str | None = None,
        peer_sockets: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.control_socket = control_socket  # --workers: where the other workers reach this one
        self.peer_sockets = peer_sockets
        self.state: ServerState | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health_grpc: grpc.aio.Server | None = None  # the plaintext health-only listener (--health-port)
        self._health: health.HealthHandle | None = None
        self._tokens: security.TokenStore | None = None
        self._stop_requested: asyncio.Event | None = None
        self._decoder: ThreadPoolExecutor | None = None  # decodes the images of cnnserve.v1.Classify
        self._grace_s = config.grace_period_s

    async def start(self) -> None:
        """Load, bind and register; StartupError when any of it fails (nothing is left running then)."""
        config = self.config
        self._stop_requested = asyncio.Event()
        # The credentials first: a wrong file fails at once, not after every model has loaded.
        tls = security.load_tls(config)
        self._tokens = security.TokenStore(config.auth_token_file) if config.auth_token_file else None
        interceptors = [security.BearerTokenInterceptor(self._tokens)] if self._tokens else []
        # The port too: one in use fails in a moment, not after every model was loaded and warmed. (Binding
        # itself waits for the models: an unstarted grpc.aio server keeps its port even after stop().)
        if not self.reuse_port:  # --workers bind one port together on purpose
            ports.check_bindable(config.host, config.port)
        repository = ModelRepository.load(config)
        state = ServerState(config, repository, peer_sockets=self.peer_sockets)
        state.metrics = metrics = ServerMetrics(state)
        state.controller = ModelController(config, repository, self._on_models_changed)
        health_server = None
        decoder = classifier_service.decode_pool()
        try:
            if config.metrics_port >= 0:
                self.metrics_port = metrics.start(config.metrics_host, config.metrics_port)
            listeners = 1 if self.control_socket is None else 2
            message_bytes = repository.message_bytes()
            server = transport.create_server(
                config,
                reuse_port=self.reuse_port,
                interceptors=interceptors,
                listeners=listeners,
                message_bytes=message_bytes,
            )
            guard_server(server, CallLimit(config.max_concurrent_rpcs, transport.guard_metadata_bytes(server)))
            classifier_service.add_to_server(server, state, decoder)
            inference_service.add_to_server(server, state)
            self._health = health.add_to_server(server, state)
            port = transport.bind(server, config, tls.server_credentials() if tls else None)
            if self.control_socket is not None:
                server.add_insecure_port(control.socket_target(self.control_socket))
            if config.health_port >= 0:
                health_server = transport.create_server(config, reuse_port=self.reuse_port)
                guard_server(
                    health_server, CallLimit(config.max_concurrent_rpcs, transport.guard_metadata_bytes(health_server))
                )
                self._health.add_health_only(health_server)
                self.health_port = transport.bind(health_server, config, port=config.health_port)
                await health_server.start()
            await server.start()
        except BaseException:
            if health_server is not None:
                await health_server.stop(None)
            metrics.stop()
            decoder.shutdown(wait=False)
            repository.close()
            raise
        self._grpc, self._health_grpc, self.port, self.state = server, health_server, port, state
        self._decoder = decoder
        state.phase = Phase.SERVING
        await self._health.set_serving(True)
        state.controller.start()
        health_handle, refreshes = self._health, set[asyncio.Future[None]]()

        def on_health_change() -> None:  # on the loop, from a batch's outcome
            task = asyncio.ensure_future(health_handle.refresh())
            refreshes.add(task)
            task.add_done_callback(refreshes.discard)

        repository.watch_health(on_health_change)
        ready = [f"{s.name}/{s.version}" for s in repository.statuses() if s.state == "READY"]
        logger.info(
            "cnnserve %s listening on %s:%d (models ready: %s)",
            __version__,
            config.host,
            port,
            ", ".join(ready) or "none",
        )
        logger.info(
            "transport: %s, %s, reflection %s%s",
            "mutual TLS" if config.tls_client_ca else "TLS" if tls else "plaintext",
            "bearer tokens required" if self._tokens else "no authentication",
            "on" if config.reflection else "off",
            f", health only on {config.host}:{self.health_port} (plaintext)" if health_server else "",
        )
        logger.info(
            "limits: messages %d bytes, %d images per Classify, batch %d per ModelInfer, %d concurrent calls, "
            "%d streams per connection, queue %d requests / %d bytes per version",
            config.max_message_bytes or message_bytes,
            config.max_images_per_request,
            config.max_infer_batch_size,
            config.max_concurrent_rpcs,
            config.max_concurrent_streams,
            config.max_queue_size,
            config.max_queue_bytes,
        )

    def reload_tokens(self) -> None:
        """Re-read --auth-token-file (SIGHUP); the tokens in force stay when the file is unreadable or empty."""
        if self._tokens is not None:
            self._tokens.reload()

    async def _on_models_changed(self) -> None:
        """A version became READY or left: health follows (metrics read the repository at each scrape)."""
        if self._health is not None:
            await self._health.refresh()

    async def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Start, serve until a stop is requested, then drain and stop."""
        await self.start()
        if on_started is not None:
            on_started()
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self.drain_and_stop()

    def request_stop(self, grace_s: float | None = None) -> None:
        """Begin draining (call on the server's loop; signal handlers and RunningServer.stop do)."""
        if grace_s is not None:
            self._grace_s = grace_s
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def drain_and_stop(self) -> None:
        """Two phases within the grace period. First the server keeps answering: new requests get UNAVAILABLE
        (which clients may retry elsewhere) while the queued ones run. Then gRPC stops, giving requests still in
        a handler the rest of the grace period. Stopping gRPC at once would instead answer CANCELLED (which no
        client retries) to requests that arrived meanwhile: gRPC cancels the calls it holds but has not handed to
        a handler yet, so a request that arrives in the very instant of the stop still can be."""
        assert self.state is not None and self._grpc is not None and self._health is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace_s
        logger.info("draining: refusing new requests, finishing accepted ones (up to %.1f s)", self._grace_s)
        state = self.state
        repository = state.repository
        state.begin_draining()
        await self._health.set_serving(False)
        controller = state.controller
        stopping_controller = asyncio.ensure_future(controller.stop()) if controller is not None else None
        await asyncio.sleep(max(0.0, min(deadline, loop.time() + _DRAIN_LINGER_S) - loop.time()))
        queues = [asyncio.ensure_future(served.batcher.drained()) for served in repository.served()]
        if queues:
            _, waiting = await asyncio.wait(queues, timeout=max(0.0, deadline - loop.time()))
            for queue in waiting:  # the grace period ended first: gRPC's stop cancels what is still queued
                queue.cancel()
        logger.info("queues empty; stopping gRPC (requests still in a handler get %.1f s)", deadline - loop.time())
        await self._grpc.stop(max(0.0, deadline - loop.time()))
        if stopping_controller is not None:  # versions unloaded before the signal finish draining
            try:  # a load still under way finishes within the grace period, or is abandoned with the process
                await asyncio.wait_for(stopping_controller, max(0.1, deadline - loop.time()))
            except TimeoutError:
                logger.warning("a model load was still running at the end of the grace period; abandoning it")
        if self._health_grpc is not None:
            await self._health_grpc.stop(None)
        if self._decoder is not None:
            self._decoder.shutdown(wait=False)
        repository.close()
        if state.metrics is not None:
            state.metrics.stop()
        state.phase = Phase.STOPPED
        logger.info("stopped")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: a cheaper event loop for the per-request work of grpc.aio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# --- in a thread, for tests, benchmarks and the demo -------------------------------------------------------------


class RunningServer:
    """A Server running on its own event loop in a background thread."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        assert server.port is not None and server.state is not None
        self._server, self._loop, self._thread = server, loop, thread
        self.port: int = server.port
        self.metrics_port: int | None = server.metrics_port
        self.health_port: int | None = server.health_port
        self.state: ServerState = server.state
        host = server.config.host
        self.address = f"{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        """Drain (accepted requests finish within `grace` seconds, default the config's) and wait for the end."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.request_stop, grace)
            self._thread.join()


@contextmanager
def serve_in_thread(config: ServerConfig) -> Iterator[RunningServer]:
    """Start a server in a background thread; yields once it serves; stops it (draining) on exit."""
    server = Server(config)
    started = threading.Event()
    failure: list[BaseException] = []
    loop = new_event_loop()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.run(on_started=started.set))
        except BaseException as exc:
            failure.append(exc)
        finally:
            loop.close()
            started.set()

    thread = threading.Thread(target=target, name=f"cnnserve-server-{id(server):x}", daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        raise failure[0]
    running = RunningServer(server, loop, thread)
    try:
        yield running
    finally:
        running.stop()


# --- cnnserve serve ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnserve serve",
        description="Serve a model repository over gRPC (cnnserve.v1.Classifier, the Open Inference Protocol, "
        "grpc.health.v1, reflection) with dynamic batching; Prometheus metrics over HTTP.",
    )
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    configure_logging(args.verbose + 1)  # a server says where it listens: INFO by default
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return fail("cnnserve serve", exc)
    if config.workers > 1:
        from cnnserve.server.workers import supervise

        try:
            return supervise(config)
        except StartupError as exc:
            return fail("cnnserve serve", exc)
    return run_server(config)


def run_server(
    config: ServerConfig,
    *,
    reuse_port: bool = False,
    control_socket: str | None = None,
    peer_sockets: tuple[str, ...] = (),
) -> int:
    """Serve in this process, on its main thread, until SIGTERM or SIGINT (then drain); the exit code.

    The first signal drains and leads to EXIT_OK; a second one exits at once with EXIT_FAILURE. A startup failure
    is one line on stderr and EXIT_STARTUP. `reuse_port`: join a port other processes serve too (--workers);
    `control_socket`, `peer_sockets`: this worker's and the others' sockets for explicit model control.
    """
    server = Server(config, reuse_port=reuse_port, control_socket=control_socket, peer_sockets=peer_sockets)
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.warning("%s received: draining (send it again to exit at once)", signal.Signals(signum).name)
            server.request_stop()
        else:
            logger.warning("second signal: exiting now, abandoning requests still running")
            logging.shutdown()
            os._exit(EXIT_FAILURE)

    def on_started() -> None:
        # Everything alive now (modules, sessions, descriptors) lives as long as the process: move it out of
        # the cyclic collector's way, so its full collections stay short on the request path.
        gc.collect()
        gc.freeze()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        if config.auth_token_file is not None:  # else SIGHUP keeps its default meaning
            loop.add_signal_handler(signal.SIGHUP, server.reload_tokens)
        await server.run(on_started)

    loop = new_event_loop()
    try:
        loop.run_until_complete(serve())
    except StartupError as exc:
        return fail("cnnserve serve", exc)
    finally:
        loop.close()
    return EXIT_OK

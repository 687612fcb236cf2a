"""The closed-loop callers of `cnnserve bench` and the processes that run them.

A caller sends the point's pre-serialized request, awaits the answer and sends again (unary calls, or messages on
one bidirectional stream) until the window ends; only calls that complete inside the window are samples. With
several processes, each runs its share of the callers on its own event loop and connections, and the samples
come back through a pipe to be merged. Nothing here parses answers, except a stream's, whose errors travel inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import resource
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

import grpc

from cnnserve.client.bench.workloads import Workload
from cnnserve.client.errors import BenchError

Rpc = Literal["unary", "stream"]
RPCS: tuple[Rpc, ...] = ("unary", "stream")
Loop = Literal["asyncio", "uvloop"]
LOOPS: tuple[Loop, ...] = ("asyncio", "uvloop")


@dataclass(frozen=True, slots=True)
class CallerSettings:
    """How callers reach the server, and over how many processes (the part of BenchConfig the callers need)."""

    server: str  # HOST:PORT
    channel_options: tuple[tuple[str, Any], ...]
    connections: int  # per process; callers take them in turn
    processes: int
    loop: Loop
    timeout_s: float  # per call (unary) or per answer (stream)
    # TLS: (root certificates, client key, client certificate) PEM bytes, as grpc.ssl_channel_credentials takes
    # them; None: plaintext.
    tls: tuple[bytes | None, bytes | None, bytes | None] | None = None
    token: str | None = None  # sent as `authorization: Bearer <token>` on every call (TLS or loopback only)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel's credentials; None: a plaintext channel. A token rides on TLS, or on gRPC's local
        credentials, which refuse any peer that is not on this machine (the token never leaves it in clear)."""
        transport = grpc.ssl_channel_credentials(*self.tls) if self.tls is not None else None
        if self.token is None:
            return transport
        transport = transport or grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        return grpc.composite_channel_credentials(transport, grpc.access_token_call_credentials(self.token))


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """What one process runs for one point: `callers` closed loops between two absolute monotonic times."""

    workload: Workload
    callers: int
    rpc: Rpc
    measure_from: float  # time.monotonic(): warm-up ends, samples start (CLOCK_MONOTONIC is system-wide)
    measure_until: float  # samples end; callers stop sending


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """One process's share of one point."""

    latencies_s: bytes  # array('d') of the calls that completed inside the window, in seconds
    errors: dict[str, int]  # gRPC status name -> calls that failed inside the window
    cpu_s: float  # this process's CPU time (user + system, every thread) inside the window
    wall_s: float


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process, gRPC's pollers included
    return usage.ru_utime + usage.ru_stime


async def _unary_caller(
    channel: grpc.aio.Channel, job: WorkerJob, timeout_s: float, latencies: array[float], errors: Counter[str]
) -> None:
    """One closed loop of unary calls: send, await the answer, record, repeat until the window ends."""
    call = channel.unary_unary(job.workload.method, request_serializer=None, response_deserializer=None)
    request, start, stop = job.workload.request, job.measure_from, job.measure_until
    clock = time.monotonic
    now = clock()
    while now < stop:
        sent = now
        try:
            await call(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            now = clock()
            if now >= start:
                errors[exc.code().name] += 1
            continue
        now = clock()
        if start <= now < stop:
            latencies.append(now - sent)


async def _stream_caller(
    channel: grpc.aio.Channel, job: WorkerJob, timeout_s: float, latencies: array[float], errors: Counter[str]
) -> None:
    """One closed loop on one bidirectional stream: write a request, read its answer, repeat (perf_analyzer's
    --streaming). A request's failure travels in its answer; a broken stream counts once and is reopened."""
    workload, start, stop = job.workload, job.measure_from, job.measure_until
    open_stream = channel.stream_stream(workload.stream_method, request_serializer=None, response_deserializer=None)
    clock = time.monotonic
    now = clock()
    while now < stop:
        stream: Any = open_stream()  # type: ignore[call-arg]  # grpc-stubs lags grpc.aio; no deadline on purpose
        failure = ""
        try:
            while now < stop and not failure:
                sent = now
                await stream.write(workload.request)
                async with asyncio.timeout(timeout_s):
                    answer = await stream.read()
                now = clock()
                if not isinstance(answer, bytes):  # grpc.aio.EOF: the server closed the stream
                    failure = "UNAVAILABLE"
                elif (error := workload.stream_error(answer)) and start <= now < stop:
                    errors[error] += 1
                elif start <= now < stop:
                    latencies.append(now - sent)
            if not failure:
                await stream.done_writing()
        except grpc.aio.AioRpcError as exc:
            failure = exc.code().name
        except TimeoutError:
            failure = "DEADLINE_EXCEEDED"
        if failure:
            stream.cancel()
            now = clock()
            if now >= start:
                errors[failure] += 1


async def _cpu_window(job: WorkerJob) -> tuple[float, float]:
    """CPU seconds and wall seconds of this process between the job's two instants."""
    await asyncio.sleep(max(0.0, job.measure_from - time.monotonic()))
    cpu0, wall0 = _cpu_s(), time.monotonic()
    await asyncio.sleep(max(0.0, job.measure_until - wall0))
    return _cpu_s() - cpu0, time.monotonic() - wall0


async def run_job(channels: Sequence[grpc.aio.Channel], job: WorkerJob, timeout_s: float) -> WorkerResult:
    """Run `job.callers` closed loops spread over `channels`; return what completed inside the window."""
    latencies: array[float] = array("d")
    errors: Counter[str] = Counter()
    caller = _stream_caller if job.rpc == "stream" else _unary_caller
    window = asyncio.ensure_future(_cpu_window(job))
    await asyncio.gather(
        *(caller(channels[i % len(channels)], job, timeout_s, latencies, errors) for i in range(job.callers))
    )
    cpu_s, wall_s = await window
    return WorkerResult(latencies.tobytes(), dict(errors), cpu_s, wall_s)


def _open_channels(settings: CallerSettings) -> list[grpc.aio.Channel]:
    options = list(settings.channel_options)
    credentials = settings.credentials()
    if credentials is not None:
        return [grpc.aio.secure_channel(settings.server, credentials, options) for _ in range(settings.connections)]
    return [grpc.aio.insecure_channel(settings.server, options=options) for _ in range(settings.connections)]


async def _serve_jobs(settings: CallerSettings, conn: Connection) -> None:
    """A child process: connect, say so, then run each job sent down the pipe until None arrives."""
    channels = _open_channels(settings)
    try:
        await asyncio.gather(*(ch.channel_ready() for ch in channels))
        conn.send("ready")
        loop = asyncio.get_running_loop()
        while (job := await loop.run_in_executor(None, conn.recv)) is not None:
            conn.send(await run_job(channels, job, settings.timeout_s))
    finally:
        await _close(channels)


async def _close(channels: Sequence[grpc.aio.Channel]) -> None:
    await asyncio.gather(*(ch.close(None) for ch in channels))


def _worker_main(settings: CallerSettings, conn: Connection) -> None:
    """Entry point of a load generator child process (spawned: no gRPC state is inherited through fork)."""
    with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
        runner.run(_serve_jobs(settings, conn))


def _loop_factory(settings: CallerSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if settings.loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def split_callers(concurrency: int, processes: int) -> list[int]:
    """Callers per process, as even as possible, largest first; processes with none are left out."""
    share, extra = divmod(concurrency, processes)
    return [n for n in (share + (i < extra) for i in range(processes)) if n]


class CallerPool:
    """Runs the callers of each point in this process (one process) or in spawned children (several), keeping
    their connections open from point to point. A context manager: children start on entry, stop on exit."""

    def __init__(self, settings: CallerSettings) -> None:
        self._settings = settings
        self._runner: asyncio.Runner | None = None
        self._channels: list[grpc.aio.Channel] = []
        self._children: list[tuple[mp.process.BaseProcess, Connection]] = []

    def __enter__(self) -> CallerPool:
        if self._settings.processes == 1:
            self._runner = asyncio.Runner(loop_factory=_loop_factory(self._settings))
        else:
            context = mp.get_context("spawn")  # grpc must not be inherited through fork
            for _ in range(self._settings.processes):
                parent, child = context.Pipe()
                process: mp.process.BaseProcess = context.Process(
                    target=_worker_main, args=(self._settings, child), daemon=True
                )
                process.start()
                child.close()
                self._children.append((process, parent))
            for child_process, conn in self._children:  # a child says "ready" once its connections are up
                if not conn.poll(self._settings.timeout_s) or conn.recv() != "ready":
                    self.__exit__(None, None, None)
                    raise BenchError(
                        f"load generator process {child_process.pid} did not connect to {self._settings.server}"
                    )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            self._runner.run(_close(self._channels))
            self._runner.close()
        for process, conn in self._children:
            with contextlib.suppress(OSError):
                conn.send(None)
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    def run(
        self, workload: Workload, concurrency: int, rpc: Rpc, *, warmup_s: float, duration_s: float
    ) -> tuple[tuple[float, float], list[WorkerResult]]:
        """`concurrency` closed loops for warmup_s + duration_s: the window (monotonic start, end) measured and
        each busy process's result."""
        # Children start their loops on receipt; the slack covers the time to start them all (and, the first
        # time, to connect) so warm-up really is `warmup_s` of load for every caller.
        measure_from = time.monotonic() + 0.25 + warmup_s
        window = (measure_from, measure_from + duration_s)
        shares = split_callers(concurrency, self._settings.processes)
        jobs = [WorkerJob(workload, callers, rpc, *window) for callers in shares]
        if self._runner is not None:
            return window, [self._runner.run(self._run_local(jobs[0]))]
        busy = self._children[: len(jobs)]
        for (_, conn), job in zip(busy, jobs, strict=True):
            conn.send(job)
        return window, [conn.recv() for _, conn in busy]

    async def _run_local(self, job: WorkerJob) -> WorkerResult:
        if not self._channels:
            self._channels = _open_channels(self._settings)
            await asyncio.gather(*(ch.channel_ready() for ch in self._channels))
        return await run_job(self._channels, job, self._settings.timeout_s)

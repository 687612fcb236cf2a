"""ServerMetrics: Prometheus metrics on their own HTTP port, with the names of Triton's metrics.

Nothing is counted per request here: a collector reads each model version's ModelStats (plain integers the
batcher and services keep anyway) when Prometheus scrapes, so serving pays nothing for metrics. Each server has
its own CollectorRegistry, so several servers can live in one process (tests, benchmarks).

Counters follow the Prometheus convention and carry `_total` (`nv_inference_count_total`); durations are in
microseconds as in Triton. Labels: model, version; failures also reason (REJECTED, CANCELED, TIMEOUT, BACKEND,
OTHER).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cnnserve.server.errors import StartupError
from cnnserve.server.repository import ServedModel
from cnnserve.server.stats import FAILURE_REASONS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from cnnserve.server.state import ServerState

logger = logging.getLogger(__name__)

LABELS = ["model", "version"]
# Upper bounds of the batch size histogram (images per session run); +Inf is added by the family.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class _StateCollector(Collector):
    """Turns every version's ModelStats (and the server's phase) into metric families at scrape time."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        repository = self._state.repository
        served = repository.served()

        def counter(name: str, doc: str, value_of: object) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=LABELS)
            for model in served:
                family.add_metric([model.name, str(model.version)], value_of(model.stats))  # type: ignore[operator]
            return family

        yield counter("nv_inference_request_success", "Requests answered successfully", lambda s: s.success.count)
        failure = CounterMetricFamily(
            "nv_inference_request_failure", "Requests that failed", labels=[*LABELS, "reason"]
        )
        for model in served:
            for reason in FAILURE_REASONS:
                failure.add_metric([model.name, str(model.version), reason], model.stats.failures[reason])
        yield failure
        yield counter(
            "nv_inference_count", "Images inferred (batch rows, padding excluded)", lambda s: s.inference_count
        )
        yield counter("nv_inference_exec_count", "Session runs (batches)", lambda s: s.execution_count)
        yield counter(
            "nv_inference_request_duration_us",
            "Cumulative end-to-end request time, microseconds",
            lambda s: (s.success.ns + s.fail.ns) / 1e3,
        )
        yield counter(
            "nv_inference_queue_duration_us",
            "Cumulative time requests waited in the queue, us",
            lambda s: s.queue.ns / 1e3,
        )
        for stage, doc in (
            ("input", "Cumulative time assembling batches (the one concatenation), us, per request"),
            ("infer", "Cumulative onnxruntime run time, us, per request"),
            ("output", "Cumulative time handing rows back, us, per request"),
        ):
            yield counter(
                f"nv_inference_compute_{stage}_duration_us",
                doc,
                lambda s, stage=stage: getattr(s, f"compute_{stage}").ns / 1e3,
            )
        pending = GaugeMetricFamily("nv_inference_pending_request_count", "Requests queued or running", labels=LABELS)
        dropped = CounterMetricFamily(
            "cnnserve_dropped_requests", "Requests removed from the queue before they ran", labels=[*LABELS, "reason"]
        )
        batch_sizes = HistogramMetricFamily("cnnserve_batch_size", "Images per session run", labels=LABELS)
        for model in served:
            labels = [model.name, str(model.version)]
            pending.add_metric(labels, model.stats.pending)
            for reason, count in model.stats.dropped.items():
                dropped.add_metric([*labels, reason], count)
            buckets, total = _batch_histogram(model)
            batch_sizes.add_metric(labels, buckets, total)
        yield pending
        yield dropped
        yield batch_sizes
        ready = GaugeMetricFamily(
            "cnnserve_model_ready",
            "1 when the version is READY, with the provider it runs on",
            labels=[*LABELS, "provider"],
        )
        providers = {(m.name, m.version): m.provider for m in served}
        draining = self._state.draining
        for status in repository.statuses():
            provider = providers.get((status.name, status.version), "")
            is_ready = status.state == "READY" and not draining
            ready.add_metric([status.name, str(status.version), provider], 1.0 if is_ready else 0.0)
        yield ready


def _batch_histogram(model: ServedModel) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (upper bound, count) pairs and the sum of sizes, from the per batch size counts."""
    # list(): one step under the GIL, while the event loop may be adding a batch size on its thread
    counts = {size: stats.count for size, stats in list(model.stats.batches.items())}
    buckets = [
        (str(bound), float(sum(c for size, c in counts.items() if size <= bound))) for bound in BATCH_SIZE_BUCKETS
    ]
    buckets.append(("+Inf", float(sum(counts.values()))))
    return buckets, float(sum(size * c for size, c in counts.items()))


class ServerMetrics:
    """The registry of one server and, once started, the HTTP endpoint that serves it (GET /metrics)."""

    def __init__(self, state: ServerState) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(state))
        self._http: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def render(self) -> bytes:
        """The exposition text, as a scrape would get it."""
        return generate_latest(self.registry)

    def start(self, host: str, port: int) -> int:
        """Serve over HTTP on host:port (0 = a free port); returns the real port. StartupError if it cannot bind."""
        try:
            self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (choose another --metrics-port, "
                "or -1 to turn metrics off)"
            ) from exc
        self.port = int(self._http.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

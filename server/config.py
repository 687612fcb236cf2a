"""ServerConfig: the one frozen configuration of `cnnserve serve`, and how flags and CNNSERVE_* variables build it.

Every flag has an environment variable named after it (`--max-batch-size` -> `CNNSERVE_MAX_BATCH_SIZE`); a flag
on the command line wins over the variable, the variable over the default. A variable set to the empty string
counts as unset (compose and .env files write `NAME=` for "no value"). Validation happens once, in
`ServerConfig.__post_init__`, and raises ConfigError saying what was expected.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnnserve.addresses import is_loopback
from cnnserve.errors import ConfigError
from cnnserve.options import add_options, env_name, option, option_values, parse_bool

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
ModelControlMode = Literal["none", "poll", "explicit"]
MODEL_CONTROL_MODES: tuple[ModelControlMode, ...] = ("none", "poll", "explicit")
Transport = Literal["auto", "grpcio", "native"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "grpcio", "native")

# The largest gRPC message the server picks by itself (--max-message-bytes 0): 64 RGB 224x224 float32 images are
# 38.5 MB, 64 MiB leaves room for the protobuf framing. The client's default is the same.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MIN_AUTO_MESSAGE_BYTES = 4 * 1024 * 1024  # the floor of the automatic limit: room for a few photos as PNG/JPEG
DEFAULT_IMAGE_FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_IMAGE_PIXELS = 16_000_000
DEFAULT_MAX_QUEUE_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_QUEUE_SIZE = 1024


def available_cores() -> int:
    """CPU cores this process may really use: its affinity mask, capped by a cgroup v2 CPU quota when set.

    onnxruntime's own default sizes its pool to the host's physical cores and ignores both (and cgroup quotas,
    microsoft/onnxruntime#29510), which oversubscribes containers.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _on_off(text: str) -> bool:
    """`--reflection on|off` (and the other spellings parse_bool takes) as a flag with a value."""
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated list: "a, b" -> ("a", "b")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `cnnserve serve` needs. Units are in the field names."""

    model_repository: Path = option(help="folder with <model>/<version>/model.onnx + model.json", convert=Path)
    host: str = option("127.0.0.1", help="interface to bind", default_text="127.0.0.1; 0.0.0.0 for every interface")
    # 0 = an ephemeral port (the real one is logged and on RunningServer.port)
    port: int = option(8001, help="gRPC port", default_text="8001; 0 picks a free one")
    metrics_port: int = option(
        8002, help="Prometheus metrics HTTP port", default_text="8002; 0 picks a free one; -1 disables"
    )
    device: Device = option("auto", help="auto (CUDA when it really loads, else CPU), cpu or cuda", choices=DEVICES)
    allow_cpu_fallback: bool = option(
        False, help="with --device cuda, run on CPU when CUDA fails to load instead of failing", kind="switch"
    )
    max_batch_size: int = option(64, help="most images per session run; larger requests are split")
    # How long the first request of a batch may wait for more while the batch is not full. With eager_dispatch
    # the wait ends early when an instance is idle and no request arrived during the last event-loop turn:
    # lowest latency. Without it every batch waits out the delay (or fills): fewer, larger batches, which cost
    # less CPU per request where gRPC, not the model, is the limit, for more latency (the figures:
    # benchmarks/RESULTS.md, "Figures behind the server's defaults").
    max_queue_delay_us: int = option(2000, help="longest wait for a batch to fill, in microseconds")
    eager_dispatch: bool = option(
        True, help="dispatch at once when an instance is idle and no more requests are arriving", kind="switch"
    )
    # A batch whose measured run time is at most this runs on the event loop itself when no other batch is
    # running (two thread hand-offs cost more than a tiny run); 0 = always an instance thread.
    inline_run_us: int = option(
        100, help="run batches measured at most this many microseconds on the event loop when idle; 0 = never"
    )
    max_queue_size: int = option(DEFAULT_MAX_QUEUE_SIZE, help="queued requests per model version before UNAVAILABLE")
    # Batches running at once per model version; 0 = one per core plus one. The extra one is ready on its thread
    # when a core finishes a batch, instead of the core waiting for the event loop to hand it the next (more
    # images/s at 8 x 64, the same at 1 x 1 and 32 x 1: benchmarks/RESULTS.md, "Figures behind the server's defaults").
    instances: int = option(
        0, help="batches running at once per model version", default_text="0: one per core, plus one"
    )
    intra_op_threads: int = option(
        0, help="onnxruntime threads per session run", default_text="0: cores // instances, at least 1"
    )
    max_message_bytes: int = option(
        0,
        help="largest gRPC message, bytes; over it RESOURCE_EXHAUSTED",
        default_text="0: 2 x max-batch-size images of the largest model, at least 4 MiB, at most 64 MiB",
    )
    grace_period_s: float = option(20.0, help="after SIGTERM, seconds accepted requests may take to finish")
    # Server processes sharing the port (SO_REUSEPORT), each with its own batchers; instances is their total.
    workers: int = option(1, help="server processes sharing the port, each with its own batchers")
    default_model: str | None = option(
        None, help="model answering requests that name none", convert=str, default_text="the only model"
    )
    # Model control (Triton's names): none = read the repository once at start; poll = rescan it every
    # repository_poll_secs and load, reload and unload what changed; explicit = RepositoryModelLoad/Unload, with
    # load_model (names, or "*" for all) loaded at start.
    model_control_mode: ModelControlMode = option(
        "none",
        help="none (read the repository once), poll (rescan every --repository-poll-secs) or explicit "
        "(RepositoryModelLoad/Unload)",
        choices=MODEL_CONTROL_MODES,
    )
    repository_poll_secs: float = option(15.0, help="with --model-control-mode poll, seconds between rescans")
    load_model: tuple[str, ...] = option(
        (),
        help="with --model-control-mode explicit, a model to load at start; repeat it, or '*' for all "
        "(env: comma-separated)",
        kind="repeat",
        convert=_parse_list,
    )
    # Transport security and what the server exposes (README "Security"). TLS: PEM files; with tls_client_ca
    # every client must present a certificate signed by that CA (mutual TLS). auth_token_file: one bearer token
    # per line, re-read on SIGHUP. health_port: a plaintext listener serving grpc.health.v1 only (-1 = none).
    # reflection: None resolves to on when host is a loopback address, off otherwise.
    tls_cert: Path | None = option(
        None, help="PEM certificate chain: serve TLS on --port (with --tls-key)", convert=Path
    )
    tls_key: Path | None = option(None, help="PEM private key of --tls-cert", convert=Path)
    tls_client_ca: Path | None = option(
        None, help="PEM CA certificates: require client certificates signed by them (mutual TLS)", convert=Path
    )
    auth_token_file: Path | None = option(
        None,
        help="file with one bearer token per line: every call must send `authorization: Bearer <token>`, except "
        "grpc.health.v1 (open, so that probes work); re-read on SIGHUP",
        convert=Path,
    )
    health_port: int = option(
        -1, help="also serve grpc.health.v1, and nothing else, in plaintext on this port", default_text="-1: no"
    )
    reflection: bool | None = option(
        None,
        help="server reflection on|off",
        convert=_on_off,
        metavar="on|off",
        default_text="on when --host is loopback, else off",
    )
    metrics_host: str = option(
        "127.0.0.1", help="interface of the metrics endpoint", default_text="127.0.0.1, whatever --host is"
    )
    # Which gRPC server runs (server/transport.py): grpc.aio, pygrpc-native's Rust HTTP/2 front, or auto (native
    # when installed and the configuration is within its reach, else grpcio).
    transport: Transport = option(
        "auto",
        help="gRPC server: grpcio (grpc.aio), native (pygrpc-native: HTTP/2 and gRPC framing in Rust, unary and "
        "server-streaming calls served natively, bidirectional streams and reflection through a grpc.aio server "
        "behind it; no TLS, no connection idle/age limits) or auto (native when installed and the configuration "
        "allows it, else grpcio: TLS or a connection idle/age limit put auto on grpcio; the start-up log says "
        "which and why)",
        choices=TRANSPORTS,
    )

    # --- limits on what one request, one client or the queue may cost ---
    image_formats: tuple[str, ...] = option(
        DEFAULT_IMAGE_FORMATS, help="image formats Classify decodes, comma-separated Pillow names", convert=_parse_list
    )
    max_image_pixels: int = option(
        DEFAULT_MAX_IMAGE_PIXELS, help="most pixels (width x height, by the header) of an image to decode"
    )
    max_images_per_request: int = option(
        0, help="most images in one Classify request", default_text="0: 4 x max-batch-size"
    )
    max_infer_batch_size: int = option(
        0, help="largest batch dimension of a ModelInfer input", default_text="0: 4 x max-batch-size"
    )
    max_queue_bytes: int = option(
        DEFAULT_MAX_QUEUE_BYTES, help="queued pixel bytes per model version before UNAVAILABLE"
    )
    max_concurrent_rpcs: int = option(1000, help="calls served at once, probes aside; more -> RESOURCE_EXHAUSTED")
    max_concurrent_streams: int = option(
        100, help="concurrent calls per client connection (HTTP/2 streams, grpc.max_concurrent_streams)"
    )
    # A connection silent for 20 s after a keepalive ping is closed.
    keepalive_time_s: float = option(60.0, help="seconds between keepalive pings on an idle connection")
    keepalive_min_ping_interval_s: float = option(
        10.0, help="clients pinging more often than this many seconds are sent GOAWAY (too_many_pings)"
    )
    # 0 (never), grpc-core's own default: keepalive (above) closes dead peers on both transports; pygrpc-native
    # has no idle or age limit, so a value here puts auto on grpcio.
    max_connection_idle_s: float = option(
        0.0, help="close connections idle (no calls) this many seconds; 0 = never; > 0 puts auto on grpcio"
    )
    max_connection_age_s: float = option(
        0.0,
        help="close connections older than this many seconds (after a 30 s grace for their calls); 0 = never; "
        "> 0 puts auto on grpcio",
    )
    unhealthy_after_failures: int = option(
        5,
        help="failed batches in a row that turn a model version NOT_SERVING until a probe succeeds; 0 = never",
    )
    allow_no_ready_models: bool = option(
        False, help="start even when no model version is READY (else exit 3)", kind="switch"
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # the dataclass is frozen; resolving defaults happens here, once
        set_(self, "model_repository", Path(self.model_repository))
        if not self.host:
            raise ConfigError("host must be an interface address such as 127.0.0.1 or 0.0.0.0, got ''")
        _check_range("port", self.port, 0, 65535)
        _check_range("metrics_port", self.metrics_port, -1, 65535)
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, got {self.transport!r}")
        _check_range("max_batch_size", self.max_batch_size, 1, 4096)
        _check_range("max_queue_delay_us", self.max_queue_delay_us, 0, 10_000_000)
        _check_range("max_queue_size", self.max_queue_size, 1, 10_000_000)
        _check_range("inline_run_us", self.inline_run_us, 0, 1_000_000)
        _check_range("instances", self.instances, 0, 256)
        _check_range("intra_op_threads", self.intra_op_threads, 0, 1024)
        _check_range("workers", self.workers, 1, 256)
        if self.max_message_bytes != 0:
            _check_range("max_message_bytes", self.max_message_bytes, 1024, 2**31 - 1)
        self._check_limits()
        if not 0 <= self.grace_period_s <= 3600:
            raise ConfigError(f"grace_period_s must be between 0 and 3600 seconds, got {self.grace_period_s}")
        if self.default_model is not None and not self.default_model:
            raise ConfigError("default_model must be a model name or unset, got ''")
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ConfigError(
                f"model_control_mode must be one of {', '.join(MODEL_CONTROL_MODES)}, got {self.model_control_mode!r}"
            )
        if not 0.01 <= self.repository_poll_secs <= 86400:
            raise ConfigError(f"repository_poll_secs must be between 0.01 and 86400, got {self.repository_poll_secs}")
        set_(self, "load_model", tuple(self.load_model))
        if self.load_model and self.model_control_mode != "explicit":
            raise ConfigError(
                "load_model chooses what explicit model control loads at start; it needs model_control_mode explicit, "
                f"got {self.model_control_mode!r}"
            )
        if any(not name or "/" in name or name.startswith(".") for name in self.load_model):
            raise ConfigError(f"load_model must be model folder names or '*', got {list(self.load_model)}")
        if self.port != 0 and self.port == self.metrics_port:
            raise ConfigError(f"port and metrics_port must differ, both are {self.port}")
        self._check_security()
        cores = available_cores()
        if self.instances == 0:
            set_(self, "instances", cores + 1)
        if self.intra_op_threads == 0:
            set_(self, "intra_op_threads", max(1, cores // self.instances))
        if (self.instances - 1) * self.intra_op_threads > cores:  # one batch beyond the cores is on purpose
            logger.warning(
                "instances (%d) x intra_op_threads (%d) exceeds the %d available cores by more than one batch: "
                "expect oversubscription",
                self.instances,
                self.intra_op_threads,
                cores,
            )

    def _check_limits(self) -> None:
        set_ = object.__setattr__
        formats = tuple(dict.fromkeys(f.strip().upper() for f in self.image_formats if f.strip()))
        if not formats:
            raise ConfigError("image_formats must name at least one Pillow format, such as PNG,JPEG")
        set_(self, "image_formats", formats)
        _check_range("max_image_pixels", self.max_image_pixels, 1, 2**31 - 1)
        _check_range("max_images_per_request", self.max_images_per_request, 0, 10_000_000)
        _check_range("max_infer_batch_size", self.max_infer_batch_size, 0, 10_000_000)
        if self.max_images_per_request == 0:
            set_(self, "max_images_per_request", 4 * self.max_batch_size)
        if self.max_infer_batch_size == 0:
            set_(self, "max_infer_batch_size", 4 * self.max_batch_size)
        _check_range("max_queue_bytes", self.max_queue_bytes, 1024, 2**62)
        _check_range("max_concurrent_rpcs", self.max_concurrent_rpcs, 1, 10_000_000)
        _check_range("max_concurrent_streams", self.max_concurrent_streams, 1, 2**31 - 1)
        _check_range("unhealthy_after_failures", self.unhealthy_after_failures, 0, 1_000_000)
        seconds = ("keepalive_time_s", "keepalive_min_ping_interval_s", "max_connection_idle_s", "max_connection_age_s")
        for name in seconds:
            value = getattr(self, name)
            if not 0 <= value <= 30 * 86400:
                raise ConfigError(f"{name} must be between 0 and {30 * 86400} seconds, got {value}")

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_us / 1e6

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def _check_security(self) -> None:
        """The TLS, token, health-port and metrics-host fields; reflection's default from the host."""
        set_ = object.__setattr__
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
            if getattr(self, name) is not None:
                set_(self, name, Path(getattr(self, name)))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: give both (TLS) or neither (plaintext)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key: the server's own certificate")
        _check_range("health_port", self.health_port, -1, 65535)
        if self.health_port > 0 and self.health_port in (self.port, self.metrics_port):
            raise ConfigError(f"health_port must differ from port and metrics_port, got {self.health_port}")
        if not self.metrics_host:
            raise ConfigError("metrics_host must be an interface address such as 127.0.0.1 or 0.0.0.0, got ''")
        if self.reflection is None:
            set_(self, "reflection", is_loopback(self.host))


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {value!r}")


# --- flags and environment -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare one flag per ServerConfig field (cnnserve.options: flag > CNNSERVE_* variable > default)."""
    add_options(parser, ServerConfig)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Merge parsed flags over CNNSERVE_* variables over the defaults, then validate (ConfigError)."""
    values = option_values(ServerConfig, args, environ)
    if "model_repository" not in values:
        raise ConfigError(
            f"the model repository is required: pass --model-repository or set {env_name('model_repository')}"
        )
    return ServerConfig(**values)


def parse_config(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, prog: str = "cnnserve serve"
) -> ServerConfig:
    """Flags (and env) -> ServerConfig, for tests and embedders. argparse errors exit with status 2 (usage)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)), environ)

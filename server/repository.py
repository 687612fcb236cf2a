"""ModelRepository: the versions found under `<root>/<name>/<version>/{model.onnx,model.json}`, each a ServedModel
(READY) or a ModelStatus (not serving, with its reason), and how one version is validated and loaded. What is
loaded when (start-up scan, polling, explicit load/unload, version policies) is cnnserve.server.lifecycle's.

Checks per version, in order: model.json is a valid ModelCard naming this folder's model and version; model.onnx
exists and its sha256 is the card's; onnxruntime loads it; the graph has one input and one output whose names,
element types and shapes are the card's (dynamic batch axis); the card embedded in the ONNX metadata, when there,
agrees; every batch size the runtime will use runs (warm-up) before the version is READY.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cnnserve.card import CARD_FILE, MODEL_FILE, ONNX_METADATA_KEY, ModelCard
from cnnserve.errors import ModelCardError
from cnnserve.server import default_model
from cnnserve.server.batcher import Batcher
from cnnserve.server.config import DEFAULT_MAX_MESSAGE_BYTES, MIN_AUTO_MESSAGE_BYTES, ServerConfig
from cnnserve.server.errors import (
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ProviderError,
    StartupError,
    VersionError,
    shown,
)
from cnnserve.server.runtime import ModelRuntime
from cnnserve.server.stats import ModelStats

logger = logging.getLogger(__name__)

# ONNX element type names as onnxruntime spells them, by card dtype
_ORT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}
#: Seconds between the probe batches of a version that failed --unhealthy-after-failures batches in a row.
PROBE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One version, ready or not (RepositoryIndex, ModelReady, ListModels, health)."""

    name: str
    version: int
    state: Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]
    reason: str  # "" when READY
    # The version folder's files when this status was decided (lifecycle retries a failed load once they change).
    fingerprint: tuple[int, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of a model's signature: its name, numpy dtype and shape with -1 for the batch dimension. The
    services check requests against it and show it in their protocol's terms."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # e.g. (-1, 1, 28, 28)


class ServedModel:
    """One READY model version: its card, the provider it runs on, its statistics and its batcher."""

    def __init__(self, card: ModelCard, runtime: ModelRuntime, batcher: Batcher, stats: ModelStats) -> None:
        self.name = card.name
        self.version = card.version
        self.card = card
        self.provider = runtime.provider
        self.max_batch_size = batcher.max_batch_size
        self.stats = stats
        self.runtime = runtime
        self.batcher = batcher
        self.status = ModelStatus(self.name, self.version, "READY", "")
        self.fingerprint: tuple[int, ...] = ()  # set by lifecycle: the files this version was loaded from
        # (fingerprint, reason) of changed files that failed to load while this version kept serving
        self.failed_reload: tuple[tuple[int, ...], str] | None = None
        # Health follows the batches: `unhealthy_after` failures in a row make the version UNAVAILABLE (with its
        # reason) until a batch succeeds; meanwhile a probe batch of one blank image runs every PROBE_INTERVAL_S.
        self.unhealthy_after = 0
        self.on_health_change: Callable[[], None] | None = None
        self._unhealthy: str | None = None  # why the batches fail, while they do
        self._failures = 0
        self._probe: asyncio.Task[None] | None = None
        batcher.on_batch = self._batch_done
        self._image_shape = card.input.shape
        self._dtype = np.dtype(card.input.dtype)
        # The one input ([-1, C, H, W] of the card's dtype), which every request is checked against, and the output.
        self.input_spec = TensorSpec(card.input.name, self._dtype, (-1, *card.input.shape))
        self.output_spec = TensorSpec(card.output.name, np.dtype(np.float32), (-1, card.num_classes))

    async def infer(self, pixels: np.ndarray, *, deadline: float | None = None) -> np.ndarray:
        """(N, C, H, W) of the card's dtype -> logits (N, num_classes) float32; row i answers pixels[i].

        `deadline` is absolute time.monotonic() seconds. Raises InvalidInputError, QueueFullError, DrainingError,
        DeadlineExceededError; cancelling the awaiting task takes the request out of the queue before it runs.
        """
        if pixels.ndim != 4 or pixels.shape[1:] != self._image_shape or len(pixels) == 0:
            raise InvalidInputError(
                f"{self.name} expects images of shape [N >= 1, {', '.join(map(str, self._image_shape))}], "
                f"got {list(pixels.shape)}"
            )
        if pixels.dtype != self._dtype:
            raise InvalidInputError(f"{self.name} expects {self._dtype} pixels, got {pixels.dtype}")
        if not pixels.flags.c_contiguous:
            pixels = np.ascontiguousarray(pixels)
        return await self.batcher.infer(pixels, deadline)

    def close(self) -> None:
        """Stop probing, stop the batcher's threads (after its queue drained), release the onnxruntime session."""
        self.stop_probing()
        self.batcher.close()
        self.runtime.release()

    @property
    def healthy(self) -> bool:
        """Its batches are not failing (--unhealthy-after-failures in a row)."""
        return self._unhealthy is None

    @property
    def health_status(self) -> ModelStatus:
        """`status`, or UNAVAILABLE with the reason while its batches fail."""
        if self._unhealthy is None:
            return self.status
        return ModelStatus(self.name, self.version, "UNAVAILABLE", self._unhealthy)

    def _batch_done(self, error: BaseException | None) -> None:
        """Batcher callback, on the event loop: count failures in a row, flip health at the threshold and back."""
        if error is None:
            if self._failures:
                self._failures = 0
                if self._unhealthy is not None:
                    logger.warning("model %s version %d is READY again: a batch succeeded", self.name, self.version)
                    self._unhealthy = None
                    self._changed()
            return
        self._failures += 1
        if self.unhealthy_after and self._failures >= self.unhealthy_after and self._unhealthy is None:
            reason = f"{self._failures} batches in a row failed (last: {error}); probing every {PROBE_INTERVAL_S:g} s"
            logger.error("model %s version %d is UNAVAILABLE: %s", self.name, self.version, reason)
            self._unhealthy = reason
            self._changed()
            if self._probe is None or self._probe.done():
                self._probe = asyncio.get_running_loop().create_task(self._probe_until_healthy())

    def _changed(self) -> None:
        if self.on_health_change is not None:
            self.on_health_change()

    async def _probe_until_healthy(self) -> None:
        blank = np.zeros((1, *self._image_shape), dtype=self._dtype)
        while self._unhealthy is not None and not self.batcher.draining:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self.batcher.infer(blank)  # its outcome reaches _batch_done like any batch's
            except Exception:  # the failure is counted and logged by the batcher; probe again
                continue

    def stop_probing(self) -> None:
        if self._probe is not None:
            self._probe.cancel()


class ModelRepository:
    """Every version found under the repository root, READY (a ServedModel) or UNAVAILABLE (a reason)."""

    def __init__(
        self,
        config: ServerConfig,
        models: dict[str, dict[int, ServedModel | ModelStatus]],
        default_from_file: str | None = None,
    ) -> None:
        self.config = config
        self._default_from_file = default_from_file  # the model <repository>/default names, read at start
        self._models: dict[str, dict[int, ServedModel | ModelStatus]] = {}
        self._on_health_change: Callable[[], None] | None = None  # watch_health
        # name -> highest READY version, the answer to get(name) (the hot path of every request)
        self._latest: dict[str, ServedModel] = {}
        for name, versions in models.items():
            self.set_entries(name, versions)

    @classmethod
    def load(cls, config: ServerConfig) -> ModelRepository:
        """Scan and load what the model control mode loads at start (cnnserve.server.lifecycle.load_repository).
        StartupError when the root is unusable, CUDA was demanded and is absent, or (mode none) no version is
        READY and --allow-no-ready-models is not given."""
        from cnnserve.server.lifecycle import load_repository

        repository = load_repository(config)
        if config.model_control_mode == "none" and not repository._latest and not config.allow_no_ready_models:
            reasons = "; ".join(f"{s.name}/{s.version}: {s.reason}" for s in repository.statuses())
            raise StartupError(
                f"no model version in {config.model_repository} is READY ({reasons}); fix them, or pass "
                "--allow-no-ready-models to serve anyway"
            )
        return repository

    # --- changes (lifecycle calls these on the event loop; each is one step, so a request sees old or new) ---

    def entries(self, name: str) -> dict[int, ServedModel | ModelStatus]:
        """A copy of one model's versions ({} when unknown)."""
        return dict(self._models.get(name, {}))

    def names(self) -> list[str]:
        return sorted(self._models)

    def set_entries(self, name: str, versions: dict[int, ServedModel | ModelStatus]) -> None:
        """Replace every version of `name` ({} removes the model); requests naming no version now get the highest
        READY one of the new set. Retiring a ServedModel that left the set is the caller's job."""
        if versions:
            self._models[name] = dict(sorted(versions.items()))
        else:
            self._models.pop(name, None)
        ready = [entry for entry in versions.values() if isinstance(entry, ServedModel)]
        for served in ready:  # health follows each version's batches (watch_health)
            served.unhealthy_after = self.config.unhealthy_after_failures
            served.on_health_change = self._health_changed
        if ready:
            self._latest[name] = max(ready, key=lambda served: served.version)
        else:
            self._latest.pop(name, None)

    # --- queries --------------------------------------------------------------------------------------------

    def statuses(self) -> list[ModelStatus]:
        """Every version found, sorted by (name, version). Safe from other threads (the metrics scrape): a
        model's versions are replaced whole, never changed in place, so one snapshot of the outer dict suffices."""
        return [
            entry.health_status if isinstance(entry, ServedModel) else entry
            for _, versions in sorted(self._models.copy().items())
            for _, entry in sorted(versions.items())
        ]

    def served(self) -> list[ServedModel]:
        """Every READY version, sorted by (name, version); safe from other threads as statuses() is."""
        return [
            entry
            for _, versions in sorted(self._models.copy().items())
            for _, entry in sorted(versions.items())
            if isinstance(entry, ServedModel)
        ]

    def get(self, name: str, version: str | int | None = None) -> ServedModel:
        """The READY version asked for; version None, "" or 0 means the highest READY one."""
        if not version or version == "0":
            latest = self._latest.get(name)
            if latest is not None:
                return latest
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFoundError(f"unknown model {shown(name)}; this server has: {', '.join(sorted(self._models))}")
        if not version or version == "0":
            reasons = "; ".join(
                f"version {v}: {entry.reason}"
                for v, entry in sorted(versions.items())
                if isinstance(entry, ModelStatus)
            )
            raise ModelNotReadyError(f"model {name!r} has no READY version ({reasons})")
        text = str(version)
        if not (text.isascii() and text.isdigit()):  # int() would take " 1", "١" and "1_0"
            raise ModelNotFoundError(f"model version must be a positive integer in ASCII digits, got {shown(text)}")
        number = int(text)
        entry = versions.get(number)
        if entry is None:
            raise ModelNotFoundError(
                f"model {name!r} has no version {number}; it has version(s) {', '.join(map(str, sorted(versions)))}"
            )
        if isinstance(entry, ModelStatus):
            raise ModelNotReadyError(f"model {name!r} version {number} is UNAVAILABLE: {entry.reason}")
        return entry

    def default_model_name(self) -> str:
        """The model a request that names none goes to (see server/default_model.py for the rule)."""
        name = default_model.choose(self.config.default_model, self._default_from_file, self._models)
        if name is None:
            raise ModelNotFoundError(default_model.missing_message(self._latest))
        return name

    @property
    def ready(self) -> bool:
        """At least one version READY (loaded, and its batches not failing); ServerState adds the phase."""
        return any(served.healthy for served in self.served())

    def model_ready(self, name: str) -> bool:
        """The model has a READY version (loaded, batches not failing); ServerState adds the phase."""
        versions = self._models.get(name, {})
        return any(isinstance(v, ServedModel) and v.healthy for v in versions.values())

    def message_bytes(self) -> int:
        """The automatic gRPC message limit: 2 x max_batch_size images of the largest model (at least 4 MiB, at
        most 64 MiB), so that one message can never ask for more than two full batches of work."""
        sizes = [int(np.prod(m.card.input.shape)) * np.dtype(m.card.input.dtype).itemsize for m in self.served()]
        largest = max(sizes, default=0)
        return min(DEFAULT_MAX_MESSAGE_BYTES, max(MIN_AUTO_MESSAGE_BYTES, 2 * self.config.max_batch_size * largest))

    def watch_health(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` (on the event loop) whenever a version's health flips, for versions loaded later too."""
        self._on_health_change = on_change

    def _health_changed(self) -> None:
        if self._on_health_change is not None:
            self._on_health_change()

    def stop_accepting(self) -> None:
        """From now on every infer() raises DrainingError; requests already queued still run (ServerState drains)."""
        for served in self.served():
            served.batcher.draining = True

    def close(self) -> None:
        for served in self.served():
            served.stop_probing()
            served.batcher.close()


# --- loading one version ---------------------------------------------------------------------------------------


def load_version(name: str, version: int, folder: Path, config: ServerConfig) -> ServedModel | ModelStatus:
    """Validate, load and warm one version folder: READY (a ServedModel) or UNAVAILABLE with the reason (logged).
    ProviderError (--device cuda without CUDA) propagates: at start-up it stops the server."""
    try:
        served = _build(name, version, folder, config)
    except ProviderError:
        raise  # --device cuda without CUDA: the whole server must not start
    except VersionError as exc:
        logger.error("model %s version %d is UNAVAILABLE: %s", name, version, exc)
        # Clients read the reason (RepositoryIndex, ListModels): paths inside the repository, not the server's.
        reason = str(exc).replace(str(config.model_repository), "<repository>")
        return ModelStatus(name, version, "UNAVAILABLE", reason)
    logger.info("model %s version %d is READY on %s", name, version, served.provider)
    return served


def _build(name: str, version: int, folder: Path, config: ServerConfig) -> ServedModel:
    try:
        card = ModelCard.load(folder / CARD_FILE)
    except ModelCardError as exc:
        raise VersionError(str(exc)) from exc
    if card.name != name or card.version != version:
        raise VersionError(
            f"{CARD_FILE} describes {card.name!r} version {card.version} but sits in {name}/{version}/; "
            "the folder names must match the card"
        )
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise VersionError(f"{name}/{version}/{MODEL_FILE} is missing")
    if not card.sha256:
        raise VersionError(f"{CARD_FILE} has no sha256 of {MODEL_FILE}; re-export the model")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    if digest != card.sha256:
        raise VersionError(
            f"sha256 of {MODEL_FILE} is {digest[:16]}..., {CARD_FILE} expects {card.sha256[:16]}...: the file changed "
            "after export"
        )
    try:
        runtime = ModelRuntime(
            model_path,
            device=config.device,
            allow_cpu_fallback=config.allow_cpu_fallback,
            intra_op_threads=config.intra_op_threads,
            max_batch_size=config.max_batch_size,
        )
    except ProviderError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        # Its text names server paths and internals: logged here, a summary for clients.
        logger.error("model %s version %d: onnxruntime cannot load %s: %s", name, version, model_path, exc)
        why = f"{type(exc).__name__}; the server log has why"
        raise VersionError(f"onnxruntime cannot load {MODEL_FILE} ({why})") from exc
    _check_graph(runtime, card)
    try:
        seconds = runtime.warm_up(card.input.shape, np.dtype(card.input.dtype), card.num_classes)
    except Exception as exc:
        logger.error("model %s version %d: warm-up failed: %s", name, version, exc)
        raise VersionError(f"warm-up failed ({type(exc).__name__}; the server log has why)") from exc
    logger.info("warmed %s/%d on %d batch sizes in %.0f ms", name, version, len(runtime.run_sizes), seconds * 1e3)
    inline_images = runtime.sizes_within(card.input.shape, np.dtype(card.input.dtype), config.inline_run_us)
    stats = ModelStats()
    batcher = Batcher(
        runtime,
        stats,
        label=f"model {name} version {version}",
        max_batch_size=config.max_batch_size,
        max_queue_delay_us=config.max_queue_delay_us,
        max_queue_size=config.max_queue_size,
        max_queue_bytes=config.max_queue_bytes,
        instances=config.instances,
        eager_dispatch=config.eager_dispatch,
        inline_images=inline_images,
    )
    return ServedModel(card, runtime, batcher, stats)


def _check_graph(runtime: ModelRuntime, card: ModelCard) -> None:
    """The graph's one input and one output must be what the card promises."""
    session = runtime.session
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise VersionError(
            f"the graph has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}; "
            f"expected exactly one input {card.input.name!r} and one output {card.output.name!r}"
        )
    expected_in = [None, *card.input.shape]
    _check_tensor("input", inputs[0], card.input.name, _ORT_TYPES[card.input.dtype], expected_in)
    _check_tensor("output", outputs[0], card.output.name, "tensor(float)", [None, card.num_classes])
    embedded = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if embedded is not None:
        try:
            inner = ModelCard.from_json(embedded)
        except ModelCardError as exc:
            raise VersionError(f"the card in the ONNX metadata is invalid: {exc}") from exc
        if inner.labels != card.labels or inner.input != card.input:
            raise VersionError(f"the card in the ONNX metadata disagrees with {CARD_FILE} on labels or input")


def _check_tensor(kind: str, arg: Any, name: str, type_: str, shape: list[int | None]) -> None:
    """`shape[0] is None`: the batch axis must be dynamic (a symbolic name or unknown in the graph)."""
    if arg.name != name:
        raise VersionError(f"the graph's {kind} is named {arg.name!r}; the card expects {name!r}")
    if arg.type != type_:
        raise VersionError(f"the graph's {kind} {name!r} is {arg.type}; the card expects {type_}")
    dims = list(arg.shape)
    wanted = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
    if len(dims) != len(shape) or isinstance(dims[0], int):
        raise VersionError(f"the graph's {kind} {name!r} has shape {dims}; the card expects {wanted} (N dynamic)")
    for dim, want in zip(dims[1:], shape[1:], strict=True):
        if isinstance(dim, int) and dim != want:
            raise VersionError(f"the graph's {kind} {name!r} has shape {dims}; the card expects {wanted}")

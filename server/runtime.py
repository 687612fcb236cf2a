"""ModelRuntime: one onnxruntime InferenceSession per model version, with explicit providers, threads and warm-up.

Choices, each measured (the figures: benchmarks/RESULTS.md, "Figures behind the server's defaults"):
- ORT_ENABLE_ALL and ORT_SEQUENTIAL; explicit intra_op_num_threads (instances x intra <= cores, ServerConfig);
  inter_op 1. Spinning is off: the gRPC event loop shares the cores, and a spinning pool whose peer thread is
  descheduled loses throughput (with intra 1 there is no pool, so it changes nothing).
- The provider that really runs is `session.get_providers()[0]`; asking for CUDA and silently getting CPU is a
  startup error unless --allow-cpu-fallback. `disable_fallback()` stops the Python wrapper from switching a
  session to CPU for good after one failing run.
- CUDA pads each batch to a bucket size (1, 2, 4, ..., max) so only warmed shapes reach cuDNN, and binds the
  output on the device (IO binding). CPU runs exact sizes: a new shape costs it only a small one-off price.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from cnnserve.server.config import Device
from cnnserve.server.errors import ProviderError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# HEURISTIC: EXHAUSTIVE benchmarks every conv for every new shape (a long first run each); steady state is no slower.
# kSameAsRequested: no power-of-two arena over-allocation with variable batch sizes.
CUDA_OPTIONS: dict[str, str] = {
    "device_id": "0",
    "cudnn_conv_algo_search": "HEURISTIC",
    "arena_extend_strategy": "kSameAsRequested",
    "do_copy_in_default_stream": "1",
}


def requested_providers(device: Device, allow_cpu_fallback: bool) -> list[Any]:
    """The provider list for a session: cuda = CUDA (then CPU only with fallback allowed); cpu; auto = CUDA if
    this onnxruntime build has it, else CPU."""
    cuda = (CUDA, CUDA_OPTIONS)
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [cuda, CPU] if allow_cpu_fallback else [cuda]
    return [cuda, CPU] if CUDA in ort.get_available_providers() else [CPU]


def check_provider(device: Device, allow_cpu_fallback: bool, active: str, where: str) -> None:
    """Raise ProviderError when CUDA was demanded and something else runs; log loudly on an allowed fallback."""
    if device == "cpu" or active == CUDA:
        return
    if device == "cuda" and not allow_cpu_fallback:
        raise ProviderError(
            f"{where}: --device cuda needs {CUDA} but onnxruntime runs the model on {active} "
            f"(this onnxruntime offers {', '.join(ort.get_available_providers())}; install onnxruntime-gpu with a "
            f"matching CUDA and cuDNN, or pass --allow-cpu-fallback or --device cpu)"
        )
    if CUDA in ort.get_available_providers():
        logger.warning("%s: CUDA did not load; RUNNING ON %s (device=%s)", where, active, device)
    else:
        logger.info("%s: this onnxruntime has no CUDA; running on %s (device=%s)", where, active, device)


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def bucket_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below max_batch_size, then max_batch_size itself: (1, 2, 4, ..., max)."""
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch_size)


class ModelRuntime:
    """A loaded session plus how to feed it. `run` is thread-safe (onnxruntime sessions are; the GIL is released
    during the run) and is called from the batcher's executor threads."""

    def __init__(
        self,
        path: Path,
        *,
        device: Device,
        allow_cpu_fallback: bool,
        intra_op_threads: int,
        max_batch_size: int,
    ) -> None:
        started = time.perf_counter()
        self.path = path
        # InferenceSession raises onnxruntime's own exceptions (corrupt file, unsupported op); the repository
        # turns them into an UNAVAILABLE reason. Its UserWarning about a provider this build lacks is replaced by
        # check_provider's own message, which says what to do.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Specified provider", category=UserWarning)
            self.session = ort.InferenceSession(
                str(path),
                sess_options=session_options(intra_op_threads),
                providers=requested_providers(device, allow_cpu_fallback),
            )
        self.session.disable_fallback()
        self.provider: str = self.session.get_providers()[0]
        check_provider(device, allow_cpu_fallback, self.provider, str(path))
        self.on_cuda = self.provider == CUDA
        self.max_batch_size = max_batch_size
        # CUDA: pad to a few warmed shapes; CPU: every size runs as is, and every size is warmed.
        self.run_sizes: tuple[int, ...] = (
            bucket_sizes(max_batch_size) if self.on_cuda else tuple(range(1, max_batch_size + 1))
        )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        logger.info(
            "loaded %s on %s (intra_op_threads=%d) in %.0f ms",
            path,
            self.provider,
            intra_op_threads,
            (time.perf_counter() - started) * 1e3,
        )

    def release(self) -> None:
        """Drop the session (its memory and threads go with the last reference); call once no batch can run."""
        if hasattr(self, "session"):
            del self.session

    def padded_size(self, n: int) -> int:
        """The batch size a batch of n images really runs at (n itself on CPU; the next bucket on CUDA)."""
        if not self.on_cuda:
            return n
        return next(size for size in self.run_sizes if size >= n)

    def assemble(self, parts: Sequence[np.ndarray], n: int) -> np.ndarray:
        """The one copy per batch: the parts (each (k, C, H, W)) stacked into (padded_size(n), C, H, W)."""
        size = self.padded_size(n)
        if len(parts) == 1 and size == n:
            return parts[0]  # a lone request runs straight from its own buffer
        first = parts[0]
        batch = np.empty((size, *first.shape[1:]), dtype=first.dtype)
        np.concatenate(parts, axis=0, out=batch[:n])
        if size > n:
            batch[n:] = 0  # padding rows: computed, never returned
        return batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) -> (N, num_classes) float32."""
        if self.on_cuda:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, batch)
            binding.bind_output(self.output_name, "cuda", int(CUDA_OPTIONS["device_id"]))
            self.session.run_with_iobinding(binding)
            result: np.ndarray = binding.copy_outputs_to_cpu()[0]
            return result
        outputs: list[np.ndarray] = self.session.run([self.output_name], {self.input_name: batch})
        return outputs[0]

    def warm_up(self, image_shape: tuple[int, ...], dtype: np.dtype[Any], num_classes: int) -> float:
        """Run every batch size this runtime will see once (first runs per shape are several times slower), and
        check the output shape on the way. Returns the seconds it took."""
        started = time.perf_counter()
        largest = np.zeros((self.run_sizes[-1], *image_shape), dtype=dtype)
        for size in self.run_sizes:
            logits = self.run(largest[:size])
            if logits.shape != (size, num_classes):
                raise ValueError(
                    f"a batch of {size} gave output shape {list(logits.shape)}, expected [{size}, {num_classes}]"
                )
        return time.perf_counter() - started

    def sizes_within(self, image_shape: tuple[int, ...], dtype: np.dtype[Any], budget_us: int) -> int:
        """The largest batch size whose warm run takes at most budget_us (best of 3), 0 if even 1 takes longer.

        The batcher runs such batches directly on the event loop when no other batch is running: two thread
        hand-offs cost more than that (benchmarks/RESULTS.md, "Figures behind the server's defaults").
        Never on CUDA, whose run includes a device synchronization.
        """
        if self.on_cuda or budget_us <= 0:
            return 0
        largest = np.zeros((self.run_sizes[-1], *image_shape), dtype=dtype)
        fitting = 0
        for size in self.run_sizes:
            best_ns = min(self._timed_run(largest[:size]) for _ in range(3))
            if best_ns > budget_us * 1000:
                break
            fitting = size
        return fitting

    def _timed_run(self, batch: np.ndarray) -> int:
        started = time.perf_counter_ns()
        self.run(batch)
        return time.perf_counter_ns() - started

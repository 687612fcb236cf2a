"""ModelRuntime: explicit providers and threads, the provider that really runs, warm-up of every run size."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import ProviderError, StartupError
from cnnserve.server.repository import ModelRepository
from cnnserve.server.runtime import CPU, CUDA, ModelRuntime, bucket_sizes, requested_providers

HAS_CUDA_BUILD = CUDA in ort.get_available_providers()


def make_runtime(repository: Path, device: str = "cpu", **kwargs: object) -> ModelRuntime:
    return ModelRuntime(
        repository / "linear" / "1" / "model.onnx",
        device=device,  # type: ignore[arg-type]
        allow_cpu_fallback=bool(kwargs.pop("allow_cpu_fallback", False)),
        intra_op_threads=int(kwargs.pop("intra_op_threads", 1)),  # type: ignore[call-overload]
        max_batch_size=int(kwargs.pop("max_batch_size", 8)),  # type: ignore[call-overload]
    )


def test_provider_lists_are_explicit() -> None:
    assert requested_providers("cpu", allow_cpu_fallback=True) == [CPU]
    cuda_only = requested_providers("cuda", allow_cpu_fallback=False)
    assert [p[0] for p in cuda_only] == [CUDA] and cuda_only[0][1]["cudnn_conv_algo_search"] == "HEURISTIC"
    assert [p if isinstance(p, str) else p[0] for p in requested_providers("cuda", allow_cpu_fallback=True)] == [
        CUDA,
        CPU,
    ]
    auto = requested_providers("auto", allow_cpu_fallback=False)
    assert (auto[0][0] if HAS_CUDA_BUILD else auto[0]) == (CUDA if HAS_CUDA_BUILD else CPU)


def test_session_options_are_the_measured_ones(linear_repository: Path) -> None:
    runtime = make_runtime(linear_repository, intra_op_threads=2)
    options = runtime.session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runtime.provider == CPU == runtime.session.get_providers()[0]


@pytest.mark.skipif(HAS_CUDA_BUILD, reason="this machine's onnxruntime has CUDA")
def test_cuda_without_fallback_is_a_startup_error_naming_the_provider_obtained(linear_repository: Path) -> None:
    with pytest.raises(ProviderError, match=f"--device cuda needs {CUDA} but onnxruntime runs the model on {CPU}"):
        make_runtime(linear_repository, device="cuda")
    # The repository does not turn it into an UNAVAILABLE version: the server must not start.
    with pytest.raises(StartupError, match="--allow-cpu-fallback or --device cpu"):
        ModelRepository.load(ServerConfig(model_repository=linear_repository, device="cuda", max_batch_size=4))


@pytest.mark.skipif(HAS_CUDA_BUILD, reason="this machine's onnxruntime has CUDA")
def test_cuda_with_fallback_runs_on_cpu_and_says_so(linear_repository: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cnnserve.server.runtime"):
        runtime = make_runtime(linear_repository, device="cuda", allow_cpu_fallback=True)
    assert runtime.provider == CPU
    assert "running on CPUExecutionProvider" in caplog.text


def test_bucket_sizes_and_padding() -> None:
    assert bucket_sizes(64) == (1, 2, 4, 8, 16, 32, 64)
    assert bucket_sizes(48) == (1, 2, 4, 8, 16, 32, 48)
    assert bucket_sizes(1) == (1,)


def test_cpu_runs_and_warms_every_size_and_assembles_with_one_copy(linear_repository: Path) -> None:
    runtime = make_runtime(linear_repository, max_batch_size=8)
    assert runtime.run_sizes == tuple(range(1, 9))
    assert runtime.warm_up((1, 28, 28), np.dtype(np.uint8), 10) > 0
    parts = [np.full((k, 1, 28, 28), k, dtype=np.uint8) for k in (1, 3, 2)]
    assert runtime.assemble(parts[:1], 1) is parts[0]  # a lone request is not copied
    batch = runtime.assemble(parts, 6)
    assert batch.shape == (6, 1, 28, 28) and list(batch[:, 0, 0, 0]) == [1, 3, 3, 3, 2, 2]
    direct = runtime.session.run(None, {"input": batch})[0]
    np.testing.assert_array_equal(runtime.run(batch), direct)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_BUILD, reason="needs onnxruntime-gpu and a CUDA GPU")
def test_cuda_runs_with_io_binding_padded_to_buckets_and_matches_cpu(linear_repository: Path) -> None:
    gpu = make_runtime(linear_repository, device="cuda", max_batch_size=8)
    cpu = make_runtime(linear_repository, device="cpu", max_batch_size=8)
    assert gpu.provider == CUDA and gpu.run_sizes == (1, 2, 4, 8)
    gpu.warm_up((1, 28, 28), np.dtype(np.uint8), 10)
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 1, 28, 28), dtype=np.uint8)
    assert gpu.padded_size(5) == 8
    batch = gpu.assemble([pixels[:2], pixels[2:]], 5)
    assert batch.shape[0] == 8 and not batch[5:].any()
    np.testing.assert_allclose(gpu.run(batch)[:5], cpu.run(pixels), rtol=1e-3, atol=1e-3)

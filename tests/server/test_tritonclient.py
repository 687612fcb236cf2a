"""The unmodified tritonclient[grpc] talks to cnnserve: live, ready, metadata, config, infer (raw numpy, equal to
onnxruntime), class_count, async_infer, stream, statistics. It runs in a separate process (_tritonclient_session.py)
because it registers the same inference.* protobuf names as cnnserve.proto."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = Path(__file__).with_name("_tritonclient_session.py")


def test_tritonclient_grpc_works_unmodified(
    running_server: Any,
    grayscale_model: Any,
    fashion_images: np.ndarray,
    reference_logits: Callable[[Any, np.ndarray], np.ndarray],
    tmp_path: Path,
) -> None:
    pixels = np.ascontiguousarray(fashion_images[:4, np.newaxis])
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "expected.npy", reference_logits(grayscale_model, pixels))
    args = [running_server.address, grayscale_model.name, str(tmp_path / "pixels.npy"), str(tmp_path / "expected.npy")]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]

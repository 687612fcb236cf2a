"""Fixtures of the server tests: tiny real ONNX models written with onnx.helper into a real model repository.

The graphs are a linear classifier (uint8 (N, C, H, W) -> Cast -> Flatten -> MatMul + Add -> logits (N, classes)),
small enough to load and warm up in milliseconds, with random weights so that every image gets distinct logits
(a row handed to the wrong caller is visible). Also `serve_process`: `cnnserve serve` in a subprocess, for the
tests of signals and exit codes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from cnnserve.card import ONNX_METADATA_KEY, InputSpec, ModelCard, Normalization

LABELS = tuple(f"class{i}" for i in range(10))


def linear_onnx(
    channels: int = 1,
    height: int = 28,
    width: int = 28,
    classes: int = 10,
    *,
    input_name: str = "input",
    output_name: str = "logits",
    input_type: int = TensorProto.UINT8,
    batch: str | int = "N",
    seed: int = 0,
    card_json: str | None = None,
) -> bytes:
    """A serialized ONNX model: (N, C, H, W) -> (N, classes) float32."""
    rng = np.random.default_rng(seed)
    features = channels * height * width
    weights = helper.make_tensor("W", TensorProto.FLOAT, [features, classes], rng.standard_normal(features * classes))
    bias = helper.make_tensor("B", TensorProto.FLOAT, [classes], rng.standard_normal(classes))
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "B"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info(input_name, input_type, [batch, channels, height, width])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if card_json is not None:
        helper.set_model_props(model, {ONNX_METADATA_KEY: card_json})
    return model.SerializeToString()


def linear_card(name: str, version: int = 1, channels: int = 1, height: int = 28, width: int = 28) -> ModelCard:
    return ModelCard(
        name=name,
        architecture="linear",
        input=InputSpec(channels=channels, height=height, width=width),
        labels=LABELS,
        normalization=Normalization(mean=(0.5,) * channels, std=(0.5,) * channels, in_graph=True),
        version=version,
        opset=17,
    )


WriteVersion = Callable[..., Path]


@pytest.fixture
def write_version(tmp_path: Path) -> WriteVersion:
    """write_version(name, version=1, onnx_bytes=None, card=None, sha256=None) -> the version folder, in
    tmp_path/"models". Defaults give a valid linear model; pass pieces to break it on purpose."""

    def write(
        name: str,
        version: int = 1,
        *,
        onnx_bytes: bytes | None = None,
        card: ModelCard | None = None,
        sha256: str | None = None,
        **onnx_args: Any,
    ) -> Path:
        folder = tmp_path / "models" / name / str(version)
        folder.mkdir(parents=True)
        data = onnx_bytes if onnx_bytes is not None else linear_onnx(**onnx_args)
        (folder / "model.onnx").write_bytes(data)
        card = card or linear_card(name, version)
        card = card.evolve(sha256=sha256 or hashlib.sha256(data).hexdigest())
        (folder / "model.json").write_text(card.to_json())
        return folder

    return write


@pytest.fixture
def put_version(tmp_path: Path) -> WriteVersion:
    """put_version(name, version, seed=0, sha256=None, size=28) -> the folder: a linear version written into
    tmp_path/"models" the way the exporter writes one (a hidden folder renamed into place; an existing version is
    moved aside first, as `cnnserve export --force` does), for the tests of a repository that changes while served."""

    def put(name: str, version: int, *, seed: int = 0, sha256: str | None = None, size: int = 28) -> Path:
        root = tmp_path / "models"
        staging = root / f".staging-{name}-{version}-{time.monotonic_ns()}"
        staging.mkdir(parents=True)
        data = linear_onnx(height=size, width=size, seed=seed)
        (staging / "model.onnx").write_bytes(data)
        card = linear_card(name, version, height=size, width=size)
        card = card.evolve(sha256=sha256 or hashlib.sha256(data).hexdigest())
        (staging / "model.json").write_text(card.to_json())
        (root / name).mkdir(exist_ok=True)
        target = root / name / str(version)
        if target.exists():
            aside = root / f".aside-{time.monotonic_ns()}"
            os.replace(target, aside)
            os.replace(staging, target)
            shutil.rmtree(aside)
        else:
            os.replace(staging, target)
        return target

    return put


@pytest.fixture
def linear_repository(write_version: WriteVersion, tmp_path: Path) -> Path:
    """A repository with one valid model `linear` version 1."""
    write_version("linear")
    return tmp_path / "models"


def random_images(n: int, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28)) -> np.ndarray:
    """n distinct random uint8 images (n, C, H, W)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture
def make_images() -> Callable[..., np.ndarray]:
    """make_images(n, seed=0, shape=(1, 28, 28)): n distinct random uint8 images."""
    return random_images


class ServeProcess:
    """`cnnserve serve` in a subprocess; its stderr is collected on a thread (so the pipe never fills)."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnserve.cli", "serve", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            metrics = re.search(r"metrics on http://[^ ]+:(\d+)/metrics", line)
            if metrics:
                self.metrics_port = int(metrics.group(1))
            found = re.search(r"listening on [^ ]+:(\d+) ", line)
            if found:
                self.port = int(found.group(1))
                self._listening.set()

    def wait_listening(self, timeout: float = 60.0) -> int:
        if not self._listening.wait(timeout) or self.port is None:
            raise AssertionError(f"the server did not start; stderr:\n{self.stderr}")
        return self.port

    def pending_requests(self) -> float:
        """nv_inference_pending_request_count summed over models, from the metrics endpoint."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("nv_inference_pending"))

    def wait(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """Stop it if it still runs: SIGTERM first, so a --workers supervisor takes its workers (each in its own
        process group) down with it; SIGKILL if it has not exited within a few seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def serve_process() -> Iterator[Callable[..., ServeProcess]]:
    """serve_process(*args) starts `cnnserve serve args...`; whatever is still running at the end is killed."""
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(list(args))
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


# --- the protocol services' view of `running_server` (owner: server-protocols) -----------------------------------


@pytest.fixture(scope="session")
def grayscale_model(running_server: Any) -> Any:
    """The served 1-channel 28x28 model (lenet in tiny_repository, fashion_lenet in models/): a ServedModel."""
    for served in running_server.state.repository.served():
        if served.card.input.shape == (1, 28, 28):
            return served
    pytest.fail("running_server serves no 1x28x28 model; expected lenet (tiny_repository) or fashion_lenet")


@pytest.fixture(scope="session")
def reference_logits(running_server: Any) -> Callable[[Any, np.ndarray], np.ndarray]:
    """reference_logits(served_model, pixels) -> logits from a separate onnxruntime session on the same model.onnx,
    in this process: what every answer of the server must equal."""
    import onnxruntime

    sessions: dict[Path, Any] = {}

    def run(served: Any, pixels: np.ndarray) -> np.ndarray:
        path = running_server.state.config.model_repository / served.name / str(served.version) / "model.onnx"
        if path not in sessions:
            sessions[path] = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits: np.ndarray = sessions[path].run(None, {served.card.input.name: pixels})[0]
        return logits

    return run


@pytest.fixture(scope="session")
def fashion_images(fashion_mnist_dir: Path) -> np.ndarray:
    """The first 64 Fashion-MNIST test images, (64, 28, 28) uint8: real pictures, all different."""
    from cnnserve.training.data import read_idx

    images: np.ndarray = read_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")[:64]
    return images


@pytest.fixture(scope="session")
def encode_png() -> Callable[[np.ndarray], bytes]:
    """encode_png(pixels (H, W) or (H, W, 3) uint8) -> PNG file bytes."""
    import io

    from PIL import Image

    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()

    return encode


@pytest.fixture
def tritonclient_session(
    grayscale_model: Any,
    fashion_images: np.ndarray,
    reference_logits: Callable[[Any, np.ndarray], np.ndarray],
    tmp_path: Path,
) -> Callable[..., None]:
    """tritonclient_session(address, root_ca=None, model=None): run _tritonclient_session.py (the unmodified
    tritonclient, in its own process) against the server at `address` serving `model` (a ServedModel of a 1x28x28
    model of served_repository; default `grayscale_model`); with root_ca over TLS."""
    pixels = np.ascontiguousarray(fashion_images[:4, np.newaxis])
    np.save(tmp_path / "pixels.npy", pixels)
    script = Path(__file__).with_name("_tritonclient_session.py")

    def run(address: str, root_ca: Path | None = None, model: Any = None) -> None:
        model = model or grayscale_model
        np.save(tmp_path / "expected.npy", reference_logits(model, pixels))
        args = [address, model.name, str(tmp_path / "pixels.npy"), str(tmp_path / "expected.npy")]
        args += [str(root_ca)] if root_ca else []
        result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-4000:]

    return run

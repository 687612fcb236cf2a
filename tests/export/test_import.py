"""`cnnserve import` on small real ONNX graphs: a float32 classifier with a fixed batch becomes a served uint8
version equal to the original, and each kind of file it cannot take gets its one-line message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from cnnserve.card import ModelCard
from cnnserve.client import Client
from cnnserve.export.importer import main
from cnnserve.preprocess import normalize
from cnnserve.process import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig

LABELS = ("ant", "bee", "cat", "dog")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def classifier(
    *,
    shape: tuple[int | str, ...] = (1, 3, 8, 8),
    output: tuple[int | str, ...] = (1, 4),
    second_input: bool = False,
    elem: int = TensorProto.FLOAT,
    softmax: bool = False,
) -> bytes:
    """A float32 linear classifier x (N, C, H, W) -> Flatten -> MatMul + Add -> scores, seeded weights."""
    rng = np.random.default_rng(0)
    features = int(np.prod([d for d in shape[1:] if isinstance(d, int)]))
    classes = int(np.prod([d for d in output[1:] if isinstance(d, int)]))
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["scores" if len(output) == 2 and not softmax else "flat_scores"]),
    ]
    if softmax:  # what a Keras model converted by tf2onnx ends with: probabilities, not logits
        nodes.append(helper.make_node("Softmax", ["flat_scores"], ["scores"], axis=-1))
    if len(output) != 2:
        nodes.append(helper.make_node("Reshape", ["flat_scores", "S"], ["scores"]))
    inits = [
        helper.make_tensor("W", TensorProto.FLOAT, [features, classes], rng.standard_normal(features * classes)),
        helper.make_tensor("B", TensorProto.FLOAT, [classes], rng.standard_normal(classes)),
        helper.make_tensor("S", TensorProto.INT64, [len(output)], [-1, *output[1:]]),
    ]
    inputs = [helper.make_tensor_value_info("x", elem, list(shape))]
    if second_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 4]))
    graph = helper.make_graph(
        nodes, "tiny", inputs, [helper.make_tensor_value_info("scores", TensorProto.FLOAT, list(output))], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def run_import(model: Path, labels: Path, repository: Path, *extra: str) -> int:
    return main([
        str(model), "--repository", str(repository), "--name", "tiny", "--labels", str(labels),
        "--input", "3x8x8", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), *extra,
    ])  # fmt: skip


def test_a_fixed_batch_float_classifier_imports_serves_and_equals_the_original(
    tmp_path: Path, labels: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = classifier()
    (tmp_path / "tiny.onnx").write_bytes(original)
    repository = tmp_path / "models"
    assert run_import(tmp_path / "tiny.onnx", labels, repository, "--resize", "12") == EXIT_OK
    assert "imported" in capsys.readouterr().out
    card = ModelCard.load(repository / "tiny" / "1" / "model.json")
    assert card.labels == LABELS and card.input.dtype == "uint8" and card.normalization.in_graph
    assert (card.input.resize, card.input.resize_shorter) == ("shorter", 12)
    assert card.training["original_batch"] == 1 and card.parity is not None
    assert card.parity["max_abs_diff"] <= 1e-5

    pixels = np.random.default_rng(1).integers(0, 256, size=(5, 3, 8, 8), dtype=np.uint8)
    before = ort.InferenceSession(original, providers=["CPUExecutionProvider"])
    expected = np.concatenate([before.run(None, {"x": normalize(p[None], card.normalization)})[0] for p in pixels])
    config = ServerConfig(model_repository=repository, port=0, metrics_port=0, max_batch_size=8)
    with serve_in_thread(config) as server, Client(server.address) as client:
        served = client.infer(pixels, model="tiny", input_name="x", output_name="scores")
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_a_final_softmax_is_dropped_so_the_served_probabilities_are_the_originals(tmp_path: Path, labels: Path) -> None:
    original = classifier(shape=("batch", 3, 8, 8), output=("batch", 4), softmax=True)
    (tmp_path / "soft.onnx").write_bytes(original)
    repository = tmp_path / "models"
    assert run_import(tmp_path / "soft.onnx", labels, repository) == EXIT_OK
    card = ModelCard.load(repository / "tiny" / "1" / "model.json")
    assert card.training["final_softmax_removed"] is True and card.training["original_batch"] == "dynamic"
    pixels = np.random.default_rng(2).integers(0, 256, size=(3, 3, 8, 8), dtype=np.uint8)
    (probabilities,) = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(
        None, {"x": normalize(pixels, card.normalization)}
    )
    config = ServerConfig(model_repository=repository, port=0, metrics_port=0, max_batch_size=8)
    with serve_in_thread(config) as server, Client(server.address) as client:
        answers = client.classify(list(pixels), top_k=4, model="tiny")
    for row, answer in zip(probabilities, answers, strict=True):
        served = {p.label: p.probability for p in answer.top}
        np.testing.assert_allclose([served[label] for label in LABELS], row, atol=1e-5)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: b"\x00not an onnx file at all", "is not an ONNX model"),
        (lambda: classifier(second_input=True), "has 2 inputs (x, mask); expected one image input"),
        (lambda: classifier(shape=(1, 8, 8, 3)), "is NHWC [1, 8, 8, 3]; expected NCHW (N, 3, 8, 8)"),
        (lambda: classifier(shape=(1, 3, 16, 16)), "has shape [1, 3, 16, 16]; expected (N, 3, 8, 8)"),
        (lambda: classifier(output=(1, 4, 1, 1)), "has shape [1, 4, 1, 1]; expected (N, classes)"),
        (lambda: classifier(output=(1, 5)), "has 5 classes but --labels names 4"),
        (lambda: classifier(elem=TensorProto.INT32), "expected float32 or uint8"),
    ],
    ids=["not-onnx", "two-inputs", "nhwc", "wrong-size", "output-not-n-classes", "label-count", "int-input"],
)
def test_files_it_cannot_take_get_one_clear_line(
    build: object, message: str, tmp_path: Path, labels: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(build())  # type: ignore[operator]
    assert run_import(path, labels, tmp_path / "models") == EXIT_FAILURE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "models" / "tiny").exists()


def test_mean_and_std_must_have_one_value_per_channel(
    tmp_path: Path, labels: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny.onnx").write_bytes(classifier())
    code = main([
        str(tmp_path / "tiny.onnx"), "--repository", str(tmp_path / "models"), "--name", "tiny", "--labels",
        str(labels), "--input", "3x8x8", "--mean", "0.5", "--std", "0.5",
    ])  # fmt: skip
    assert code == EXIT_USAGE
    assert "--mean and --std need 3 value(s) each" in capsys.readouterr().err


def test_import_runs_without_torch(tmp_path: Path, labels: Path) -> None:
    """A whole import, in a fresh interpreter, never loads torch (it needs onnx and onnxruntime only)."""
    import subprocess
    import sys

    (tmp_path / "tiny.onnx").write_bytes(classifier())
    script = (
        "import sys\n"
        "from cnnserve.export.importer import main\n"
        f"code = main([{str(tmp_path / 'tiny.onnx')!r}, '--repository', {str(tmp_path / 'models')!r}, '--name', 't',"
        f" '--labels', {str(labels)!r}, '--input', '3x8x8', '--mean', '0.5,0.5,0.5', '--std', '0.5,0.5,0.5'])\n"
        "print(code, sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[-2] == "0 []", done.stdout + done.stderr

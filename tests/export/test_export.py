"""The export as a user sees it: ONNX files that onnxruntime runs like PyTorch, with the card inside and beside."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from cnnserve.card import CARD_FILE, MODEL_FILE, ONNX_METADATA_KEY, ModelCard
from cnnserve.export.config import ExportConfig
from cnnserve.export.exported_model import REFERENCE_FILE, cpu_session
from cnnserve.export.exporter import export_checkpoint
from cnnserve.export.parity import BATCH_SIZES, random_pixels, report_from_dict
from cnnserve.preprocess import normalize
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.data import load_idx

MakeCheckpoint = Callable[..., Path]
REPO_SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "fashion-mnist"


def export(checkpoint: Path, repository: Path, name: str, **options: Any) -> Path:
    result = export_checkpoint(ExportConfig(checkpoint=checkpoint, repository=repository, name=name, **options))
    return result.path


@pytest.fixture(scope="module")
def lenet_export(make_checkpoint: MakeCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, version folder) of a random-weight seed LeNet."""
    checkpoint = make_checkpoint("lenet")
    return checkpoint, export(checkpoint, tmp_path_factory.mktemp("repo"), "lenet")


@pytest.mark.parametrize(
    ("architecture", "channels", "height", "width"),
    # cnn_bn at 1x28x28 is exported by test_batchnorm_and_dropout_run_in_eval_mode.
    [("lenet", 1, 28, 28), ("lenet_relu", 1, 28, 28), ("cnn_bn", 3, 32, 40)],
)
def test_every_zoo_model_exports_and_matches_pytorch(
    make_checkpoint: MakeCheckpoint, tmp_path: Path, architecture: str, channels: int, height: int, width: int
) -> None:
    checkpoint = make_checkpoint(architecture, channels=channels, height=height, width=width)
    path = export(checkpoint, tmp_path / "models", "m")
    card = ModelCard.load(path / CARD_FILE)
    report = report_from_dict(card.parity or {})
    assert report.passed
    assert [(c.inputs, c.batch_size) for c in report.cases] == [("random", b) for b in BATCH_SIZES]
    assert report.max_abs_diff <= 1e-4
    # Independently of the report: onnxruntime on fresh pixels against the PyTorch network of the checkpoint.
    net, trained = load_checkpoint(checkpoint)
    pixels = random_pixels(card.input, 5, seed=42)
    (logits,) = cpu_session((path / MODEL_FILE).read_bytes()).run(None, {"input": pixels})
    with torch.inference_mode():
        expected = net(torch.from_numpy(normalize(pixels, trained.normalization))).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_graph_takes_uint8_pixels_and_normalizes_like_preprocess_normalize(lenet_export: tuple[Path, Path]) -> None:
    checkpoint, path = lenet_export
    net, card = load_checkpoint(checkpoint)
    session = cpu_session((path / MODEL_FILE).read_bytes())
    (input_meta,) = session.get_inputs()
    assert (input_meta.name, input_meta.type) == ("input", "tensor(uint8)")
    assert [o.name for o in session.get_outputs()] == ["logits"]
    pixels = random_pixels(card.input, 16, seed=7)
    pixels[0] = 0  # the extremes of the pixel range
    pixels[1] = 255
    (logits,) = session.run(None, {"input": pixels})
    with torch.inference_mode():
        expected = net(torch.from_numpy(normalize(pixels, card.normalization))).numpy()
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_batch_axis_is_dynamic(tiny_repository: Path) -> None:
    for name in ("lenet", "cnn_rgb"):
        card = ModelCard.load(tiny_repository / name / "1" / CARD_FILE)
        session = cpu_session((tiny_repository / name / "1" / MODEL_FILE).read_bytes())
        assert session.get_inputs()[0].shape == ["batch", *card.input.shape]
        for batch in (1, 7, 64, 3):
            (logits,) = session.run(None, {"input": random_pixels(card.input, batch)})
            assert logits.shape == (batch, card.num_classes)


def test_rgb_non_square_model_keeps_its_shape_and_labels(tiny_repository: Path) -> None:
    card = ModelCard.load(tiny_repository / "cnn_rgb" / "1" / CARD_FILE)
    assert card.input.shape == (3, 32, 40)
    assert card.labels == ("red", "green", "blue")
    assert card.normalization.in_graph and card.input.dtype == "uint8"
    assert report_from_dict(card.parity or {}).passed


def test_batchnorm_and_dropout_run_in_eval_mode(make_checkpoint: MakeCheckpoint, tmp_path: Path) -> None:
    checkpoint = make_checkpoint("cnn_bn", seed=3)
    path = export(checkpoint, tmp_path, "bn")
    graph = onnx.load(path / MODEL_FILE).graph
    assert "Dropout" not in {node.op_type for node in graph.node}
    net, card = load_checkpoint(checkpoint)
    pixels = random_pixels(card.input, 8, seed=1)
    x = torch.from_numpy(normalize(pixels, card.normalization))
    session = cpu_session((path / MODEL_FILE).read_bytes())
    (logits,) = session.run(None, {"input": pixels})
    np.testing.assert_array_equal(logits, session.run(None, {"input": pixels})[0])  # deterministic
    with torch.no_grad():
        eval_logits = net.eval()(x).numpy()
        train_logits = net.train()(x).numpy()  # batch statistics and dropout: what the graph must NOT do
    np.testing.assert_allclose(logits, eval_logits, atol=1e-4, rtol=0)
    assert np.abs(logits - train_logits).max() > 1e-2


def test_card_in_onnx_metadata_equals_model_json_without_sha256_and_parity(tiny_repository: Path) -> None:
    for name in ("lenet", "cnn_rgb"):
        folder = tiny_repository / name / "1"
        session = cpu_session((folder / MODEL_FILE).read_bytes())
        meta = session.get_modelmeta().custom_metadata_map
        embedded = ModelCard.from_json(meta[ONNX_METADATA_KEY])
        written = ModelCard.load(folder / CARD_FILE)
        assert written.sha256 is not None and written.parity is not None and written.opset == 20
        assert embedded == written.evolve(sha256=None, parity=None)
        # Flat keys for tools that know nothing of cnnserve.
        assert json.loads(meta["labels"]) == list(written.labels)
        assert json.loads(meta["mean"]) == list(written.normalization.mean)
        assert json.loads(meta["std"]) == list(written.normalization.std)
        assert meta["input_layout"] == "NCHW" and meta["input_dtype"] == "uint8"
        assert meta["model_version"] == "1" and meta["model_name"] == name


def test_sha256_in_model_json_is_the_onnx_file(tiny_repository: Path) -> None:
    for folder in (tiny_repository / "lenet" / "1", tiny_repository / "cnn_rgb" / "1"):
        digest = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
        assert ModelCard.load(folder / CARD_FILE).sha256 == digest


def test_single_file_model_without_source_paths(tiny_repository: Path) -> None:
    folder = tiny_repository / "lenet" / "1"
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, MODEL_FILE]  # no .onnx.data sidecar
    model = onnx.load(folder / MODEL_FILE)
    assert model.opset_import[0].version == 20
    assert all(len(node.metadata_props) == 0 for node in model.graph.node)
    assert b".py" not in (folder / MODEL_FILE).read_bytes()  # no stack traces or source file names
    onnx.checker.check_model(model, full_check=True)


def test_same_checkpoint_exports_to_identical_bytes(lenet_export: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, first = lenet_export
    second = export(checkpoint, tmp_path / "elsewhere", "lenet")
    assert (second / MODEL_FILE).read_bytes() == (first / MODEL_FILE).read_bytes()
    assert (second / CARD_FILE).read_text() == (first / CARD_FILE).read_text()


def test_parity_on_real_fashion_mnist_images_records_accuracy_and_reference(
    lenet_export: tuple[Path, Path], fashion_mnist_dir: Path, tmp_path: Path
) -> None:
    checkpoint, _ = lenet_export
    path = export(checkpoint, tmp_path, "lenet", parity_data=fashion_mnist_dir, parity_limit=200)
    report = report_from_dict(ModelCard.load(path / CARD_FILE).parity or {})
    assert report.passed
    real_cases = {c.batch_size: c.images for c in report.cases if c.inputs == "real"}
    assert real_cases == {1: 1, 7: 7, 64: 192}
    assert report.real_images is not None and report.real_images.count == 200
    assert report.real_images.accuracy_onnx == report.real_images.accuracy_pytorch is not None
    reference = json.loads((path / REFERENCE_FILE).read_text())
    assert len(reference["predictions"]) == 200 and len(reference["logits"]) == 64
    first = np.ascontiguousarray(load_idx(fashion_mnist_dir, "test").images[:64])
    (logits,) = cpu_session((path / MODEL_FILE).read_bytes()).run(None, {"input": first})
    np.testing.assert_allclose(logits, np.asarray(reference["logits"], dtype=np.float32), atol=1e-4, rtol=0)


def test_parity_on_a_folder_of_png_images(lenet_export: tuple[Path, Path], tmp_path: Path) -> None:
    if not REPO_SAMPLES.is_dir():
        pytest.skip(f"{REPO_SAMPLES} is missing: make it with `make samples`")
    checkpoint, _ = lenet_export
    path = export(checkpoint, tmp_path, "lenet", parity_data=REPO_SAMPLES)
    report = report_from_dict(ModelCard.load(path / CARD_FILE).parity or {})
    assert report.passed
    assert report.real_images is not None and report.real_images.count == 20
    # The folders are path-safe slugs, not the card's labels: no accuracy is claimed.
    assert report.real_images.accuracy_onnx is None

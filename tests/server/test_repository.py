"""ModelRepository: every version validated on its own; a broken one is UNAVAILABLE with its reason, the rest serve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from onnx import TensorProto

from cnnserve.card import ModelCard
from cnnserve.server.config import ServerConfig
from cnnserve.server.errors import ModelNotFoundError, ModelNotReadyError, StartupError
from cnnserve.server.repository import ModelRepository, ModelStatus


def load(root: Path, **overrides: object) -> ModelRepository:
    """The repository, loaded even when nothing in it is READY (these tests look at the reasons)."""
    settings: dict = {"max_batch_size": 8, "allow_no_ready_models": True, **overrides}
    return ModelRepository.load(ServerConfig(model_repository=root, **settings))


def reasons(repository: ModelRepository) -> dict[tuple[str, int], str]:
    return {(s.name, s.version): s.reason for s in repository.statuses() if s.state == "UNAVAILABLE"}


def test_valid_versions_are_ready_and_the_highest_is_the_default(write_version: Callable[..., Path]) -> None:
    write_version("alpha", 1)
    write_version("alpha", 3, seed=3)
    root = write_version("beta", 1).parents[1]
    repository = load(root)
    try:
        assert repository.statuses() == [
            ModelStatus("alpha", 1, "READY", ""),
            ModelStatus("alpha", 3, "READY", ""),
            ModelStatus("beta", 1, "READY", ""),
        ]
        assert repository.get("alpha").version == 3
        assert repository.get("alpha", "1").version == 1
        assert repository.get("alpha", 0).version == 3
        assert repository.get("beta", "").provider == "CPUExecutionProvider"
        assert repository.ready
    finally:
        repository.close()


@pytest.mark.parametrize(
    ("break_it", "reason"),
    [
        ({"sha256": "0" * 64}, "sha256 of model.onnx is"),
        ({"onnx_bytes": b"this is not a protobuf"}, "onnxruntime cannot load model.onnx"),
        ({"input_name": "pixels"}, "the graph's input is named 'pixels'; the card expects 'input'"),
        ({"output_name": "probs"}, "the graph's output is named 'probs'; the card expects 'logits'"),
        ({"input_type": TensorProto.FLOAT}, "is tensor(float); the card expects tensor(uint8)"),
        ({"classes": 5}, "has shape ['N', 5]; the card expects [N, 10]"),
        ({"height": 32, "width": 32}, "the card expects [N, 1, 28, 28]"),
        ({"batch": 1}, "(N dynamic)"),
    ],
)
def test_a_broken_version_is_unavailable_with_its_reason_and_the_others_serve(
    write_version: Callable[..., Path], break_it: dict[str, object], reason: str
) -> None:
    write_version("good", 1)
    root = write_version("bad", 1, **break_it).parents[1]
    repository = load(root)
    try:
        assert reason in reasons(repository)[("bad", 1)]
        assert repository.get("good").version == 1
        assert repository.ready
        with pytest.raises(ModelNotReadyError, match="model 'bad' has no READY version"):
            repository.get("bad")
        with pytest.raises(ModelNotReadyError, match="model 'bad' version 1 is UNAVAILABLE: "):
            repository.get("bad", 1)
    finally:
        repository.close()


def test_a_card_that_is_not_for_its_folder_or_missing_is_a_reason(
    write_version: Callable[..., Path],
) -> None:
    folder = write_version("moved", 2)
    card = ModelCard.load(folder / "model.json")
    card.evolve(version=1).save(folder / "model.json")  # copied from version 1 and not updated
    (folder.parent / "1").mkdir()
    (folder.parent / "1" / "model.onnx").write_bytes(b"")
    repository = load(folder.parents[1])
    try:
        got = reasons(repository)
        assert "cannot read model card" in got[("moved", 1)]
        assert "describes 'moved' version 1 but sits in moved/2/" in got[("moved", 2)]
        assert not repository.ready
    finally:
        repository.close()


def test_unknown_names_and_versions_list_what_exists(linear_repository: Path) -> None:
    repository = load(linear_repository)
    try:
        with pytest.raises(ModelNotFoundError, match="unknown model 'nope'; this server has: linear"):
            repository.get("nope")
        with pytest.raises(ModelNotFoundError, match=r"model 'linear' has no version 7; it has version\(s\) 1"):
            repository.get("linear", "7")
        with pytest.raises(ModelNotFoundError, match="version must be a positive integer in ASCII digits, got 'x'"):
            repository.get("linear", "x")
        for odd in (" 1", "\u0661", "1_0", "+1", "1.0"):  # int() takes the first three
            with pytest.raises(ModelNotFoundError, match="in ASCII digits"):
                repository.get("linear", odd)
        with pytest.raises(ModelNotFoundError) as long_name:
            repository.get("n" * 100_000)
        assert len(str(long_name.value)) < 300 and "(100000 characters)" in str(long_name.value)
        assert repository.default_model_name() == "linear"
    finally:
        repository.close()


def test_no_ready_version_is_a_startup_error_unless_allowed(write_version: Callable[..., Path]) -> None:
    folder = write_version("broken", onnx_bytes=b"this is not a protobuf")
    with pytest.raises(StartupError, match=r"no model version in .* is READY .*--allow-no-ready-models"):
        load(folder.parents[1], allow_no_ready_models=False)
    repository = load(folder.parents[1], allow_no_ready_models=True)
    try:
        assert not repository.ready
        (status,) = repository.statuses()
        assert str(folder) not in status.reason and "onnxruntime cannot load model.onnx" in status.reason
    finally:
        repository.close()


def test_startup_errors_name_the_problem(tmp_path: Path, linear_repository: Path) -> None:
    with pytest.raises(StartupError, match="is not a folder"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StartupError, match="holds no model versions"):
        load(tmp_path / "empty")
    with pytest.raises(StartupError, match="--default-model 'other' is not in"):
        load(linear_repository, default_model="other")

"""`cnnserve export` on bad input: one clear line on stderr, a non-zero exit, and nothing left in the repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnserve.cli import main as cnnserve_main
from cnnserve.export.cli import build_parser, main
from cnnserve.process import EXIT_FAILURE, EXIT_OK, EXIT_STARTUP, EXIT_USAGE

MakeCheckpoint = Callable[..., Path]


@pytest.fixture(scope="module")
def lenet_checkpoint(make_checkpoint: MakeCheckpoint) -> Path:
    return make_checkpoint("lenet")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path) -> list[str]:
    """Everything under `root`, hidden temporary folders included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_one_line(err: str, *fragments: str | Path) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnserve export: ")
    for fragment in fragments:
        assert str(fragment) in lines[0]


def test_help_explains_every_flag() -> None:
    text = build_parser().format_help()
    for flag in ("--repository", "--name", "--version", "--force", "--opset", "--architecture", "--parity-data"):
        assert flag in text
    assert all(action.help for action in build_parser()._actions)


def test_export_through_the_cnnserve_command(
    lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    code = cnnserve_main(["export", str(lenet_checkpoint), "--repository", str(repository), "--name", "lenet"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert f"exported {repository / 'lenet' / '1'}" in out
    assert "passed" in out
    assert tree(repository) == ["lenet", "lenet/1", "lenet/1/model.json", "lenet/1/model.onnx"]


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    code, _, err = run(capsys, missing, "--repository", tmp_path / "models", "--name", "m")
    assert code == EXIT_STARTUP
    assert_one_line(err, "checkpoint not found", missing)
    assert tree(tmp_path / "models") == []


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint(
    damage: str, lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.pt"
    good = lenet_checkpoint.read_bytes()
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint" if damage == "garbage" else good[: len(good) // 2])
    code, _, err = run(capsys, corrupt, "--repository", tmp_path / "models", "--name", "m")
    assert code == EXIT_STARTUP
    assert_one_line(err, "cannot read checkpoint", corrupt, "expected a checkpoint written by cnnserve train")
    assert "weights_only" not in err  # torch's advice to load unsafely is not passed on
    assert tree(tmp_path / "models") == []


def test_checkpoint_of_another_architecture(
    lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    code, _, err = run(capsys, lenet_checkpoint, "--repository", repository, "--name", "m", "--architecture", "cnn_bn")
    assert code == EXIT_STARTUP
    assert_one_line(err, lenet_checkpoint, "'lenet'", "'cnn_bn' was expected")
    assert tree(repository) == []


def test_weights_that_do_not_fit_the_card_architecture(
    make_checkpoint: MakeCheckpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    # A card that says lenet over cnn_bn weights: detected when the weights are loaded.
    checkpoint = make_checkpoint("cnn_bn")
    payload = torch.load(checkpoint, weights_only=True)
    payload["card"]["architecture"] = "lenet"
    torch.save(payload, checkpoint)
    code, _, err = run(capsys, checkpoint, "--repository", tmp_path / "models", "--name", "m")
    assert code == EXIT_STARTUP
    assert_one_line(err, checkpoint, "weights do not fit architecture 'lenet'")
    assert tree(tmp_path / "models") == []


def test_repository_that_is_a_file(lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("")
    code, _, err = run(capsys, lenet_checkpoint, "--repository", not_a_folder, "--name", "m")
    assert code == EXIT_STARTUP
    assert_one_line(err, not_a_folder, "is not a directory")
    code, _, err = run(capsys, lenet_checkpoint, "--repository", not_a_folder / "inside", "--name", "m")
    assert code == EXIT_STARTUP
    assert_one_line(err, "cannot write to model repository", not_a_folder / "inside")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_read_only_repository(lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    repository.chmod(0o555)
    try:
        code, _, err = run(capsys, lenet_checkpoint, "--repository", repository, "--name", "m")
    finally:
        repository.chmod(0o755)
    assert code == EXIT_STARTUP
    assert_one_line(err, "cannot write to model repository", repository, "Permission denied")
    assert tree(repository) == []


def test_existing_version_is_refused_without_force(
    lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    version = repository / "m" / "3"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"keep me")
    code, _, err = run(capsys, lenet_checkpoint, "--repository", repository, "--name", "m", "--version", "3")
    assert code == EXIT_STARTUP
    assert_one_line(err, version, "already exists", "--force")
    assert tree(repository) == ["m", "m/3", "m/3/model.onnx"]
    assert (version / "model.onnx").read_bytes() == b"keep me"
    code, _, _ = run(capsys, lenet_checkpoint, "--repository", repository, "--name", "m", "--version", "3", "--force")
    assert code == EXIT_OK
    assert tree(repository) == ["m", "m/3", "m/3/model.json", "m/3/model.onnx"]


def test_failed_parity_check_exits_non_zero_with_a_report_and_writes_nothing(
    lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Float32 onnxruntime and PyTorch never agree to 1e-12 on random weights: a real parity failure.
    repository = tmp_path / "models"
    code, _, err = run(capsys, lenet_checkpoint, "--repository", repository, "--name", "m", "--parity-atol", "1e-12")
    assert code == EXIT_FAILURE
    lines = err.strip().splitlines()
    assert lines[0] == "cnnserve export: parity check failed: onnxruntime and PyTorch disagree"
    assert "FAILED" in lines[1] and "1e-12" in lines[1]
    assert "<- fails" in err
    assert tree(repository) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--version", "0"], "--version must be a positive integer"),
        (["--opset", "12"], "--opset must be between 17 and 25"),
        (["--name", "../escape"], "--name must be a path-safe model name"),
        (["--parity-atol", "0"], "--parity-atol must be a positive number"),
    ],
)
def test_bad_flags_are_usage_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [tmp_path / "any.pt", "--repository", tmp_path / "models", "--name", "m", *flags]
    code, _, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert_one_line(err, message)
    assert tree(tmp_path / "models") == []


def test_missing_parity_data(lenet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository = tmp_path / "models"
    missing = tmp_path / "no-such-data"
    code, _, err = run(capsys, lenet_checkpoint, "--repository", repository, "--name", "m", "--parity-data", missing)
    assert code == EXIT_STARTUP
    assert_one_line(err, missing, "not a folder")
    assert tree(repository) == []

"""`cnnserve train` end to end: real data, a few steps, a checkpoint that loads, and clean failures on bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnserve.cli import main as cli_main
from cnnserve.process import EXIT_OK, EXIT_STARTUP, EXIT_USAGE
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.config import TrainConfig
from cnnserve.training.data import FASHION_MNIST_LABELS, channel_stats, load_idx
from cnnserve.training.train import augment, main

TRAINING_KEYS = {
    "dataset", "data_source", "test_accuracy", "checkpoint", "checkpoint_epoch", "final_test_accuracy", "epochs",
    "steps", "seed", "recipe", "wall_time_s", "cpu_time_s", "history", "train_images", "test_images",
}  # fmt: skip


@pytest.mark.slow  # reads and evaluates the real 70k images: about 10 s
def test_train_three_steps_on_fashion_mnist_writes_a_complete_card(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    out = tmp_path / "ckpt" / "fashion_lenet.pt"
    argv = ["--data-dir", str(fashion_mnist_dir), "--max-steps", "3", "--out", str(out), "--seed", "7", "-q"]
    assert main(argv) == EXIT_OK

    model, card = load_checkpoint(out, architecture="lenet")
    assert card.name == "fashion_lenet"
    assert card.arch_args == {"in_channels": 1, "num_classes": 10}
    assert (card.input.channels, card.input.height, card.input.width, card.input.dtype) == (1, 28, 28, "uint8")
    assert card.labels == FASHION_MNIST_LABELS
    mean, std = channel_stats(load_idx(fashion_mnist_dir, "train").images)
    assert card.normalization.mean == mean and card.normalization.std == std
    assert set(card.training) >= TRAINING_KEYS
    assert card.training["dataset"] == "Fashion-MNIST"
    assert (card.training["steps"], card.training["epochs"], card.training["seed"]) == (3, 1, 7)
    assert card.training["checkpoint"] == "best"
    assert 0.0 <= card.training["test_accuracy"] <= 1.0
    assert card.training["test_images"] == 10000
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


def test_same_seed_gives_the_same_weights(tmp_path: Path, tiny_idx_dir: Path) -> None:
    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        out = tmp_path / f"{name}.pt"
        argv = ["--data-dir", str(tiny_idx_dir), "--model", "cnn_bn", "--arch-arg", "width=4", "--arch-arg",
                "hidden=8", "--batch-size", "32", "--max-steps", "4", "--hflip", "--crop-padding", "2",
                "--seed", str(seed), "--out", str(out), "-q"]  # fmt: skip
        assert main(argv) == EXIT_OK
        return _weights(out)

    first, second, other = run("a", 1), run("b", 1), run("c", 2)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_training_learns_and_keep_final_records_the_last_epoch(tmp_path: Path, tiny_idx_dir: Path) -> None:
    out = tmp_path / "tiny.pt"
    argv = ["--data-dir", str(tiny_idx_dir), "--model", "lenet_relu", "--epochs", "3", "--batch-size", "16",
            "--lr", "3e-3", "--keep", "final", "--name", "tiny", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == EXIT_OK
    card = load_checkpoint(out)[1]
    history = card.training["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert (card.training["checkpoint"], card.training["checkpoint_epoch"]) == ("final", 3)
    assert card.training["test_accuracy"] == history[-1]["test_accuracy"] == card.training["final_test_accuracy"]
    # Ten bright bands are easy to tell apart: far above the 10% of guessing.
    assert card.training["final_test_accuracy"] >= 0.5
    assert card.training["recipe"]["keep"] == "final"
    assert card.labels == tuple(str(i) for i in range(10))


def test_cnn_bn_trains_on_a_folder_of_rgb_images_of_odd_sizes(
    tmp_path: Path, make_image_folder: Callable[..., Path]
) -> None:
    root = make_image_folder("shapes", per_class=5)
    out = tmp_path / "shapes.pt"
    argv = ["--image-folder", str(root), "--channels", "3", "--image-size", "24x40", "--model", "cnn_bn",
            "--arch-arg", "width=4", "--arch-arg", "hidden=8", "--max-steps", "2", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == EXIT_OK
    model, card = load_checkpoint(out)
    assert card.input.shape == (3, 24, 40)
    assert card.labels == ("ant", "bee", "cat")
    assert len(card.normalization.mean) == 3
    assert (card.training["train_images"], card.training["test_images"]) == (12, 3)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 24, 40)).shape == (1, 3)


def test_augment_flips_and_crops_within_the_zero_padding() -> None:
    pixels = torch.arange(1, 1 + 8 * 2 * 6 * 7, dtype=torch.uint8).view(8, 2, 6, 7)
    generator = torch.Generator().manual_seed(0)
    out = augment(pixels, TrainConfig(hflip=True, crop_padding_px=2), generator)
    assert out.shape == pixels.shape and out.dtype == torch.uint8
    for image, result in zip(pixels, out, strict=True):
        candidates = [image, image.flip(-1)]
        padded = [torch.nn.functional.pad(c, (2, 2, 2, 2)) for c in candidates]
        windows = [p[:, dy : dy + 6, dx : dx + 7] for p in padded for dy in range(5) for dx in range(5)]
        assert any(torch.equal(result, w) for w in windows)
    assert not torch.equal(out, pixels)  # with 8 images something moved


def test_corrupt_data_file_is_one_line_and_a_startup_exit(
    tmp_path: Path, tiny_idx_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tiny_idx_dir / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-8])
    out = tmp_path / "x.pt"
    # Through the `cnnserve` command itself: the error must not escape as a traceback.
    assert cli_main(["train", "--data-dir", str(tiny_idx_dir), "--out", str(out), "-q"]) == EXIT_STARTUP
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"cnnserve train: {labels}: corrupt or truncated gzip data")
    assert "expected a gzip-compressed IDX file" in err
    assert not out.exists()


def test_missing_data_folder_is_a_startup_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt"), "-q"]) == EXIT_STARTUP
    assert "nowhere: data folder not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--image-folder", "x", "--image-size", "32"], "lenet takes 28x28 input only"),
        (["--arch-arg", "num_classes=3"], "set from the data"),
        (["--out", "model.onnx"], "expected a .pt file name"),
    ],
)
def test_bad_settings_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--data-dir", "--image-folder", "--epochs", "--batch-size", "--lr", "--schedule",
                 "--hflip", "--crop-padding", "--seed", "--max-steps", "--out", "--threads", "--keep"):  # fmt: skip
        assert flag in text
    assert "OMP_WAIT_POLICY=PASSIVE" in text


def test_idx_arrays_are_not_modified_by_training(tiny_idx_dir: Path, tmp_path: Path) -> None:
    before = load_idx(tiny_idx_dir, "train").images.copy()
    argv = ["--data-dir", str(tiny_idx_dir), "--max-steps", "1", "--hflip", "--out", str(tmp_path / "y.pt"), "-q"]
    assert main(argv) == EXIT_OK
    np.testing.assert_array_equal(load_idx(tiny_idx_dir, "train").images, before)


def test_distillation_from_a_teacher_checkpoint_is_recorded(tmp_path: Path, tiny_idx_dir: Path) -> None:
    teacher = tmp_path / "teacher.pt"
    common = ["--data-dir", str(tiny_idx_dir), "--batch-size", "32", "-q"]
    assert main([*common, "--model", "lenet_relu", "--epochs", "2", "--out", str(teacher)]) == EXIT_OK
    student = tmp_path / "student.pt"
    argv = [*common, "--max-steps", "3", "--teacher", str(teacher), "--distill-alpha", "0.7", "--out", str(student)]
    assert main(argv) == EXIT_OK
    recipe = load_checkpoint(student)[1].training["recipe"]
    assert recipe["distill_alpha"] == 0.7
    assert recipe["teacher"]["architecture"] == "lenet_relu"
    assert recipe["teacher"]["checkpoint"] == str(teacher)


def test_teacher_with_other_labels_is_refused(
    tmp_path: Path, tiny_idx_dir: Path, make_image_folder: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "teacher.pt"
    folder = ["--image-folder", str(make_image_folder("pets")), "--max-steps", "1", "-q"]
    assert main([*folder, "--out", str(teacher)]) == EXIT_OK
    argv = ["--data-dir", str(tiny_idx_dir), "--teacher", str(teacher), "--out", str(tmp_path / "s.pt"), "-q"]
    assert main(argv) == EXIT_USAGE
    assert "are not the data's" in capsys.readouterr().err

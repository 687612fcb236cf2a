"""The pieces of the batch CLI and the client that need no server: INPUT expansion, class folders for --evaluate,
request chunking and the retry schedule."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnserve.client.classify.inputs import expand
from cnnserve.client.classify.scoring import Evaluation
from cnnserve.client.config import ClientConfig, RetryPolicy
from cnnserve.client.errors import InvalidArgument, ResourceExhausted
from cnnserve.client.images import chunk, prepare
from cnnserve.errors import ConfigError
from cnnserve.training.data import FASHION_MNIST_LABELS


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_are_walked_recursively_in_sorted_order_keeping_only_images(tmp_path: Path) -> None:
    b2, a1, a_deep = (
        touch(tmp_path / "b" / "2.png"),
        touch(tmp_path / "a" / "1.JPG"),
        touch(tmp_path / "a" / "z" / "0.png"),
    )
    touch(tmp_path / "a" / "notes.txt")
    touch(tmp_path / ".hidden" / "3.png")
    notes = tmp_path / "a" / "notes.txt"
    missing = tmp_path / "missing.png"
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n\n{b2}\n{tmp_path}/a/*.JPG\n")
    got = list(expand([str(tmp_path / "a"), str(tmp_path / "b"), str(notes), str(missing), f"@{listed}"]))
    # a folder: images only, sorted, depth first; a named file is taken as it is; a missing one passes through
    # (the job reports it); an @list is expanded line by line, patterns included.
    assert got == [str(a1), str(a_deep), str(b2), str(notes), str(missing), str(b2), str(a1)]
    assert list(expand([f"{tmp_path}/**/*.png"])) == [str(a_deep), str(b2)]


def test_evaluate_finds_the_class_in_folder_names_as_people_write_them(repo_root: Path) -> None:
    evaluation = Evaluation(FASHION_MNIST_LABELS)
    assert evaluation.true_label("x/T-shirt_top/1.png") == 0
    assert evaluation.true_label("x/t-shirt-top/1.png") == 0
    assert evaluation.true_label("x/ankle boot/1.png") == 9
    assert evaluation.true_label("x/unknown/1.png") is None
    samples = sorted((repo_root / "samples" / "fashion-mnist").glob("*/*.png"))
    if samples:  # the shipped samples: every class folder names a label
        assert {evaluation.true_label(str(p)) for p in samples} == set(range(10))
    evaluation.add("x/Sneaker/1.png", "Sneaker")
    evaluation.add("x/Sneaker/2.png", "Sandal")
    evaluation.add("x/Sneaker/3.png", None)
    evaluation.add("x/other/4.png", "Bag")
    assert (evaluation.scored, evaluation.accuracy, evaluation.failed, evaluation.unlabelled) == (2, 0.5, 1, 1)
    assert "accuracy: 0.5000 (1/2)" in evaluation.report()


def test_chunks_fit_the_message_limit_and_keep_order() -> None:
    images = [np.full((28, 28), i, np.uint8) for i in range(100)]  # 784 bytes each
    items = prepare(images)
    groups = list(chunk(items, max_bytes=8192, max_count=1000))
    assert [item.id for group in groups for item in group] == [str(i) for i in range(100)]
    assert all(sum(item.nbytes for item in group) <= 8192 for group in groups) and len(groups) > 10
    assert [len(g) for g in chunk(items, max_bytes=1 << 20, max_count=30)] == [30, 30, 30, 10]
    with pytest.raises(ResourceExhausted, match="8192"):
        list(chunk(prepare(np.zeros((100, 100), np.uint8)), max_bytes=8192, max_count=10))
    with pytest.raises(InvalidArgument, match="uint8"):
        prepare(np.zeros((28, 28), np.float32))
    with pytest.raises(InvalidArgument, match="at least one"):
        prepare([])


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(0)
    for retry in range(9):
        waits = [policy.backoff_s(retry, rng) for _ in range(200)]
        cap = min(1.0, 0.1 * 2**retry)
        assert min(waits) >= 0 and max(waits) <= cap
        assert max(waits) > 0.8 * cap and len(set(waits)) == 200  # spread over the whole range: jitter
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        ClientConfig(timeout_s=0)
    with pytest.raises(ConfigError, match="lowercase"):
        ClientConfig(metadata=(("Authorization", "Bearer x"),))


def test_the_client_imports_neither_torch_nor_onnxruntime() -> None:
    modules = [
        "cnnserve.client",
        "cnnserve.client.classify.batch",
        "cnnserve.client.aio",
        "cnnserve.client.classify.local",
    ]
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

"""--evaluate's scoring: class folders matched to labels, accuracy and the confusion matrix
(cnnserve.client.classify.scoring)."""

from __future__ import annotations

from pathlib import Path

from cnnserve.client.classify.scoring import Evaluation
from cnnserve.training.data import FASHION_MNIST_LABELS


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

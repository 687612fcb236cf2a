"""--evaluate: accuracy and a confusion matrix when the inputs sit in folders named by their class.

An image's true class is the name of the folder it is in (samples/fashion-mnist/Sneaker/3.png is a Sneaker),
matched to the model's labels ignoring case and punctuation, so a folder "T-shirt_top" stands for "T-shirt/top"
(a label with a "/" cannot be a folder name). Images in folders that match no label are counted, not scored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(slots=True)
class Evaluation:
    """Accumulates (true, predicted) pairs for the model's labels; bounded by labels², not by the input count."""

    labels: tuple[str, ...]
    confusion: np.ndarray = field(init=False)  # int64 (true, predicted)
    unlabelled: int = 0  # inputs whose folder matches no label
    failed: int = 0  # labelled inputs that could not be classified
    _index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)
        self._index = {_key(label): i for i, label in enumerate(self.labels)}

    def true_label(self, path: str) -> int | None:
        """The class index the folder of `path` names, or None."""
        return self._index.get(_key(os.path.basename(os.path.dirname(os.path.abspath(path)))))

    def add(self, path: str, predicted: str | None) -> None:
        """Score one input; `predicted` is its top-1 label, None when it failed."""
        truth = self.true_label(path)
        if truth is None:
            self.unlabelled += 1
        elif predicted is None:
            self.failed += 1
        else:
            self.confusion[truth, self.labels.index(predicted)] += 1

    @property
    def scored(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.scored) if self.scored else 0.0

    def report(self) -> str:
        """Accuracy, then the confusion matrix (rows: true class, columns: predicted), as plain text."""
        lines = [f"accuracy: {self.accuracy:.4f} ({int(np.trace(self.confusion))}/{self.scored})"]
        if self.unlabelled or self.failed:
            lines.append(f"not scored: {self.unlabelled} not in a class folder, {self.failed} failed")
        width = max(6, *(len(label) for label in self.labels))
        cell = max(5, len(str(int(self.confusion.max(initial=0)))) + 1)
        lines.append("confusion matrix (rows: true class, columns: predicted class, by number):")
        lines.append(" " * (width + 4) + "".join(f"{i:>{cell}}" for i in range(len(self.labels))))
        for i, label in enumerate(self.labels):
            counts = "".join(f"{int(n):>{cell}}" for n in self.confusion[i])
            lines.append(f"{i:>2} {label:<{width}} {counts}")
        return "\n".join(lines)

"""Accuracy of the shipped models on the 10k Fashion-MNIST test set, with onnxruntime, beside PyTorch's.

    .venv/bin/python benchmarks/accuracy.py [--repository models] [--data-dir /usr/share/datasets/fashion-mnist]

For every models/<name>/<version>/ it prints onnxruntime's accuracy on the test split, the accuracy that training
recorded in the card (measured in PyTorch), how many of PyTorch's predictions (reference.json) onnxruntime
reproduces, and a per-class table with one column per model. Needs onnxruntime and numpy, not torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnserve.errors import CnnserveError
from cnnserve.export.exported_model import ExportedModel, cpu_session, predict_logits, score
from cnnserve.training.data import DEFAULT_DATA_DIR, load_idx


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository (default: models)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="IDX folder with the t10k split")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default: 2)")
    args = parser.parse_args(argv)
    try:
        test = load_idx(args.data_dir, "test")
        models = [ExportedModel.load(p) for p in sorted(args.repository.glob("*/[0-9]*")) if p.is_dir()]
    except CnnserveError as exc:
        print(f"accuracy: {exc}", file=sys.stderr)
        return 1
    if not models:
        print(f"accuracy: no model versions in {args.repository}", file=sys.stderr)
        return 1
    print(f"test set: {test.source} ({len(test)} images)")
    print(f"{'model':<22} {'onnxruntime':>11} {'PyTorch (card)':>14} {'same argmax as PyTorch':>23} {'seconds':>8}")
    per_class: list[tuple[float, ...]] = []
    for model in models:
        card = model.card
        if card.labels != test.label_names:
            print(f"{card.name}/{card.version}: labels {list(card.labels)} are not the test set's; skipped")
            continue
        start = time.perf_counter()
        logits = predict_logits(cpu_session(model.model_bytes, args.threads), test.images)
        seconds = time.perf_counter() - start
        predictions = logits.argmax(axis=1)
        accuracy = score(predictions, test.labels, len(card.labels))
        per_class.append(accuracy.per_class)
        reference = model.reference()
        agree = (
            f"{int(np.sum(predictions == np.asarray(reference['predictions'])))}/{len(reference['predictions'])}"
            if reference is not None and len(reference["predictions"]) == len(test)
            else "n/a"
        )
        recorded = card.training.get("test_accuracy")
        recorded_text = f"{recorded:.4f}" if isinstance(recorded, float) else "n/a"
        print(
            f"{card.name + '/' + str(card.version):<22} {accuracy.value:>11.4f} {recorded_text:>14} "
            f"{agree:>23} {seconds:>8.2f}"
        )
    print()
    names = [f"{m.card.name}/{m.card.version}" for m in models if m.card.labels == test.label_names]
    print(f"{'per-class accuracy':<20}" + "".join(f" {n:>22}" for n in names))
    for index, label in enumerate(test.label_names):
        print(f"{label:<20}" + "".join(f" {row[index]:>22.3f}" for row in per_class))
    return 0


if __name__ == "__main__":
    sys.exit(main())

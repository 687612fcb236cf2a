"""One export, start to finish: checkpoint -> ONNX with the card -> parity check -> a new repository version.

Cheap checks (repository writable, version free, checkpoint readable) run before the slow export, and nothing
is written unless the parity check passed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cnnserve.card import InputSpec, ModelCard
from cnnserve.errors import DataError
from cnnserve.export.config import ExportConfig
from cnnserve.export.evaluate import CARD_FILE, MODEL_FILE, REFERENCE_FILE
from cnnserve.export.onnx import export_onnx, wrap_for_pixels
from cnnserve.export.parity import ParityError, ParityReport, check_parity
from cnnserve.export.repository import check_writable, choose_version, write_version
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.data import Dataset, load_idx, load_image_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path  # <repository>/<name>/<version>
    card: ModelCard  # as written to model.json
    report: ParityReport


def export_checkpoint(config: ExportConfig) -> ExportResult:
    """Export `config.checkpoint` into the repository; raises a CnnserveError subclass on any failure."""
    net, trained = load_checkpoint(config.checkpoint, config.architecture)
    check_writable(config.repository)
    version = choose_version(config.repository, config.name, config.version, config.force)
    card = trained.evolve(
        name=config.name,
        version=version,
        input=dataclasses.replace(trained.input, dtype="uint8"),
        normalization=dataclasses.replace(trained.normalization, in_graph=True),
        opset=config.opset,
        sha256=None,
        parity=None,
    )
    real = None
    if config.parity_data is not None:
        real = load_parity_images(config.parity_data, card.input, config.parity_limit)
    logger.info("exporting %s (%s) as %s version %d", config.checkpoint, card.architecture, card.name, version)
    model_bytes = export_onnx(net, card, config.opset).SerializeToString()
    outcome = check_parity(
        wrap_for_pixels(net, card), model_bytes, card.input, labels=card.labels, real=real, atol=config.parity_atol
    )
    if not outcome.report.passed:
        raise ParityError(outcome.report)
    final = card.evolve(sha256=hashlib.sha256(model_bytes).hexdigest(), parity=outcome.report.to_dict())
    files = {MODEL_FILE: model_bytes, CARD_FILE: final.to_json().encode("utf-8")}
    if outcome.reference is not None:
        # One line: 10k predictions as an indented list would be 10k lines of diff noise.
        files[REFERENCE_FILE] = (json.dumps(outcome.reference.to_dict(), separators=(",", ":")) + "\n").encode()
    path = write_version(config.repository, config.name, version, files, config.force)
    return ExportResult(path, final, outcome.report)


def load_parity_images(source: Path, spec: InputSpec, limit: int | None = None) -> Dataset:
    """The test split of an IDX folder, or every image under a folder of class sub-folders (resized by to_pixels)."""
    if not source.is_dir():
        raise DataError(f"--parity-data {source}: not a folder; expected an IDX folder or a folder of class folders")
    data = load_idx(source, "test") if any(source.glob("*-ubyte*")) else load_image_folder(source, spec)
    if limit is not None and limit < len(data):
        data = Dataset(data.images[:limit], data.labels[:limit], data.label_names, f"{data.source}, first {limit}")
    return data

"""One export, start to finish: checkpoint -> ONNX with the card -> parity check -> a new repository version.

Cheap checks (repository writable, version free, checkpoint readable) run before the slow export, and nothing
is written unless the parity check passed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cnnserve.card import CARD_FILE, MODEL_FILE, InputSpec, ModelCard
from cnnserve.errors import DataError, ParityError
from cnnserve.export.config import ExportConfig, check_model_name
from cnnserve.export.exported_model import REFERENCE_FILE
from cnnserve.export.onnx import export_onnx, wrap_for_pixels
from cnnserve.export.parity import ParityReport, check_parity
from cnnserve.export.repository import check_writable, choose_version, write_version
from cnnserve.training.checkpoint import load_checkpoint
from cnnserve.training.data import Dataset, load_idx, load_image_folder
from cnnserve.training.efficientnet import pretrained_imagenet

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportResult:
    path: Path  # <repository>/<name>/<version>
    card: ModelCard  # as written to model.json
    report: ParityReport


def export_checkpoint(config: ExportConfig) -> ExportResult:
    """Export `config.checkpoint` (or the `config.pretrained` network) into the repository; raises a
    CnnserveError subclass on any failure."""
    net: nn.Module
    if config.pretrained is not None:
        name = config.name or config.pretrained
        net, trained = pretrained_imagenet(name)
        source = f"pretrained {config.pretrained}"
    else:
        assert config.checkpoint is not None  # ExportConfig guarantees one of the two
        net, trained = load_checkpoint(config.checkpoint, config.architecture)
        name = config.name or trained.name
        source = str(config.checkpoint)
    check_model_name(name)
    check_writable(config.repository)
    version = choose_version(config.repository, name, config.version, config.force)
    card = trained.evolve(
        name=name,
        version=version,
        input=dataclasses.replace(trained.input, dtype="uint8"),
        normalization=dataclasses.replace(trained.normalization, in_graph=True),
        opset=config.opset,
        sha256=None,
        parity=None,
    )
    parity_source = card_test_data(trained) if config.parity_data == "card" else config.parity_data
    real = None if parity_source is None else load_parity_images(parity_source, card.input, config.parity_limit)
    logger.info("exporting %s (%s) as %s version %d", source, card.architecture, card.name, version)
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
    path = write_version(config.repository, name, version, files, config.force)
    return ExportResult(path, final, outcome.report)


def card_test_data(card: ModelCard) -> Path | None:
    """The IDX folder the card says the model was tested on, when it is still there; else None (logged)."""
    recorded = (card.training.get("data_source") or {}).get("test", "")
    found = re.fullmatch(r"IDX \S+ \+ \S+ in (.+)", str(recorded))
    folder = Path(found.group(1)) if found else None
    if folder is None or not any(folder.glob("t10k-images-idx3-ubyte*")):
        logger.warning(
            "parity on random pixels only: the card's test data (%s) is not an IDX folder here; "
            "pass --parity-data for real images",
            recorded or "not recorded",
        )
        return None
    return folder


def load_parity_images(source: Path, spec: InputSpec, limit: int | None = None) -> Dataset:
    """The test split of an IDX folder, or every image under a folder of class sub-folders (resized by to_pixels)."""
    if not source.is_dir():
        raise DataError(f"--parity-data {source}: not a folder; expected an IDX folder or a folder of class folders")
    data = load_idx(source, "test") if any(source.glob("*-ubyte*")) else load_image_folder(source, spec)
    if limit is not None and limit < len(data):
        data = Dataset(data.images[:limit], data.labels[:limit], data.label_names, f"{data.source}, first {limit}")
    return data

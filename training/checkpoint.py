"""Checkpoints: the weights plus the model card, in one file that rebuilds the network exactly.

Format (torch.save of a plain dict, loadable with weights_only=True):
    {"format": "cnnserve-checkpoint", "format_version": 1, "card": ModelCard.to_dict(), "state_dict": {...}}
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnserve.card import ModelCard
from cnnserve.errors import CheckpointError, ModelCardError
from cnnserve.training.models import build_model

FORMAT = "cnnserve-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard) -> None:
    """Write atomically: a reader never sees a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_failure(exc: Exception) -> str:
    """torch.load's reason in one sentence. Its own message is many lines and advises weights_only=False, which
    would run arbitrary code from the file: keep the unpickler's actual complaint, drop the advice."""
    text = " ".join(str(exc).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1]
    else:
        reason = text if text and "weights_only" not in text else "not a torch file"
    return f"{type(exc).__name__}: {reason.split(' Check the documentation')[0].strip().split('. ')[0]}"


def load_checkpoint(path: str | Path, architecture: str | None = None) -> tuple[nn.Module, ModelCard]:
    """Rebuild the network from its card and load the weights; returns (model in eval mode, card).

    `architecture`, when given, must match the checkpoint's: a checkpoint of another architecture is refused
    with a message that names both.
    """
    path = Path(path)
    try:
        # A foreign pickle makes torch warn before it fails; the error below says it better.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {path}") from exc
    except Exception as exc:  # torch raises many types for a corrupt file (UnpicklingError, RuntimeError, ...)
        raise CheckpointError(
            f"cannot read checkpoint {path}: {_load_failure(exc)}; expected a checkpoint written by cnnserve train"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnserve checkpoint (expected format {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {payload.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    try:
        card = ModelCard.from_dict(payload["card"])
    except (KeyError, ModelCardError) as exc:
        raise CheckpointError(f"{path}: bad model card in checkpoint: {exc}") from exc
    if architecture is not None and architecture != card.architecture:
        raise CheckpointError(f"{path} holds a {card.architecture!r} model, but {architecture!r} was expected")
    model = build_model(card.architecture, **card.arch_args)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        # torch lists every missing and unexpected key over many lines: one line, cut short, says enough.
        detail = " ".join(str(exc).split())
        raise CheckpointError(
            f"{path}: weights do not fit architecture {card.architecture!r} {dict(card.arch_args)}: "
            f"{detail[:240]}{'...' if len(detail) > 240 else ''}"
        ) from exc
    return model.eval(), card

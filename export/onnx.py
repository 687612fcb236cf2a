"""PyTorch to ONNX: the pixel-normalizing wrapper, the dynamo export, and the card embedded in `metadata_props`.

The exported graph takes raw pixels, uint8 (N, C, H, W), and normalizes them itself (Cast, /255, -mean, /std)
before the network, so no caller can get mean/std wrong. Its output is float32 logits (N, num_classes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import onnx
import torch
from torch import nn

from cnnserve.card import ModelCard, Normalization
from cnnserve.errors import ExportError
from cnnserve.export.config import DEFAULT_OPSET, MIN_OPSET
from cnnserve.export.metadata import flat_metadata, set_metadata, strip_node_metadata
from cnnserve.training.normalize import Normalize

logger = logging.getLogger(__name__)

#: Upper bound of the dynamic batch axis declared to torch.export (ONNX only keeps the symbolic name "batch").
MAX_BATCH = 4096
_TORCHVISION_LOGGER = "torch.onnx._internal.exporter._registration"


class PixelNormalizer(nn.Module):
    """uint8 pixels (N, C, H, W) in 0..255 -> `net((x / 255 - mean) / std)`, the arithmetic of training."""

    def __init__(self, net: nn.Module, norm: Normalization) -> None:
        super().__init__()
        self.net = net
        self.normalize = Normalize(norm)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(pixels))  # (N, num_classes)


def wrap_for_pixels(net: nn.Module, card: ModelCard) -> PixelNormalizer:
    """The network in eval mode behind the card's normalization (BatchNorm uses running stats, Dropout is off)."""
    return PixelNormalizer(net, card.normalization).eval()


def export_onnx(net: nn.Module, card: ModelCard, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export `net` behind the pixel wrapper with a dynamic batch axis; the card (as given) goes in the metadata.

    The card should already say `normalization.in_graph=True`, `input.dtype="uint8"` and `opset`.
    Node metadata that the dynamo exporter adds (stack traces, absolute source paths) is stripped, so the file
    depends only on the weights and the card.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; expected {MIN_OPSET} or newer")
    model = wrap_for_pixels(net, card)
    c, h, w = card.input.shape
    # A batch of 2 as the example: torch.export specializes a size-1 dimension, 2 keeps it symbolic.
    example = torch.randint(0, 256, (2, c, h, w), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    chatter = io.StringIO()
    try:
        # The exporter prints progress lines to stdout, warns, and logs one line per torchvision op it cannot find
        # (export needs none of them): keep all of it out of a CLI's output.
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings(), _quiet(_TORCHVISION_LOGGER):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[card.input.name],
                output_names=[card.output.name],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                external_data=False,
                dynamo=True,
            )
    except Exception as exc:  # the exporter raises many types (TorchExportError, UserError, OnnxExporterError)
        raise ExportError(f"torch.onnx.export failed for {card.architecture!r}: {exc}") from exc
    finally:
        logger.debug("exporter output:\n%s", chatter.getvalue())
    if program is None:
        raise ExportError("torch.onnx.export returned no program; expected an ONNXProgram from the dynamo exporter")
    proto: onnx.ModelProto = program.model_proto
    strip_node_metadata(proto)
    set_metadata(proto, flat_metadata(card))
    proto.doc_string = f"cnnserve {card.name} v{card.version}: {card.architecture}, uint8 NCHW pixels -> logits"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    return proto


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Raise one logger's level to ERROR for the duration of the block."""
    target = logging.getLogger(logger_name)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)

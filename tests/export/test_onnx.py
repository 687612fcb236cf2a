"""export/onnx.py: the network behind the card's normalization, exported with uint8 input and a dynamic batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from cnnserve.card import ONNX_METADATA_KEY, InputSpec, ModelCard, Normalization
from cnnserve.errors import ExportError
from cnnserve.export.exported_model import cpu_session
from cnnserve.export.onnx import export_onnx, wrap_for_pixels
from cnnserve.preprocess import normalize
from cnnserve.training.models import build_model

CARD = ModelCard(
    name="rgb",
    architecture="cnn_bn",
    input=InputSpec(channels=3, height=16, width=24),
    labels=("r", "g", "b"),
    normalization=Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), in_graph=True),
    arch_args={"in_channels": 3, "num_classes": 3, "width": 8},
    opset=18,
)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_bn", in_channels=3, num_classes=3, width=8)


def test_the_wrapper_is_the_net_on_preprocess_normalize_in_eval_mode(net: torch.nn.Module) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 3, 16, 24), dtype=np.uint8)
    wrapped = wrap_for_pixels(net, CARD)
    assert not wrapped.training and not net.training  # BatchNorm on running statistics, Dropout off
    with torch.inference_mode():
        expected = net(torch.from_numpy(normalize(pixels, CARD.normalization)))
        torch.testing.assert_close(wrapped(torch.tensor(pixels)), expected, rtol=0, atol=0)


def test_the_graph_takes_uint8_with_a_dynamic_batch_and_carries_the_card(net: torch.nn.Module) -> None:
    proto = export_onnx(net, CARD, opset=18)
    (graph_input,) = proto.graph.input
    assert graph_input.name == "input" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    batch, *rest = graph_input.type.tensor_type.shape.dim
    assert batch.dim_param and [d.dim_value for d in rest] == [3, 16, 24]
    assert proto.opset_import[0].version == 18
    assert ModelCard.from_json({p.key: p.value for p in proto.metadata_props}[ONNX_METADATA_KEY]) == CARD
    assert all(not node.metadata_props for node in proto.graph.node)  # no stack traces or local paths
    session = cpu_session(proto.SerializeToString())
    pixels = np.random.default_rng(1).integers(0, 256, size=(5, 3, 16, 24), dtype=np.uint8)
    (logits,) = session.run(None, {"input": pixels})
    with torch.inference_mode():
        expected = wrap_for_pixels(net, CARD)(torch.tensor(pixels)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_an_opset_below_the_minimum_is_refused(net: torch.nn.Module) -> None:
    with pytest.raises(ExportError, match="opset 16 is too old; expected 17 or newer"):
        export_onnx(net, CARD, opset=16)

"""export/metadata.py: the card in the ONNX file's metadata_props, whole and as a few flat keys."""

from __future__ import annotations

import json

import onnx
from onnx import helper

from cnnserve.card import ONNX_METADATA_KEY, InputSpec, ModelCard, Normalization
from cnnserve.export.metadata import flat_metadata, set_metadata, strip_node_metadata

CARD = ModelCard(
    name="tiny",
    architecture="lenet",
    input=InputSpec(),
    labels=("a", "b"),
    normalization=Normalization((0.25,), (0.5,), in_graph=True),
    version=3,
)


def tiny_graph() -> onnx.ModelProto:
    node = helper.make_node("Identity", ["x"], ["y"])
    node.metadata_props.add(key="pkg.torch.stack_trace", value="/home/someone/train.py:1")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]))


def test_flat_metadata_is_strings_with_the_whole_card() -> None:
    props = flat_metadata(CARD)
    assert all(isinstance(value, str) for value in props.values())
    assert ModelCard.from_json(props[ONNX_METADATA_KEY]) == CARD
    assert json.loads(props["labels"]) == ["a", "b"] and json.loads(props["mean"]) == [0.25]
    assert (props["normalization_in_graph"], props["model_name"], props["model_version"]) == ("true", "tiny", "3")


def test_set_replaces_the_props_and_strip_drops_node_metadata() -> None:
    proto = tiny_graph()
    set_metadata(proto, {"old": "1"})
    set_metadata(proto, flat_metadata(CARD))
    keys = {p.key for p in proto.metadata_props}
    assert "old" not in keys and ONNX_METADATA_KEY in keys
    assert len(proto.graph.node[0].metadata_props) == 1
    strip_node_metadata(proto)
    assert len(proto.graph.node[0].metadata_props) == 0
    onnx.checker.check_model(proto)

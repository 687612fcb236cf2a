"""The ONNX file's model-level metadata: the card as `metadata_props`, written by export and by import (no torch)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import onnx

from cnnserve.card import ONNX_METADATA_KEY, ModelCard


def flat_metadata(card: ModelCard) -> dict[str, str]:
    """The card as ONNX `metadata_props` (string values only): the whole card as JSON, plus a few flat keys that
    tools which know nothing of cnnserve (Netron, onnxruntime's get_modelmeta) can show."""
    return {
        ONNX_METADATA_KEY: card.to_json(),
        "labels": json.dumps(list(card.labels)),
        "mean": json.dumps(list(card.normalization.mean)),
        "std": json.dumps(list(card.normalization.std)),
        "normalization_in_graph": json.dumps(card.normalization.in_graph),
        "input_layout": card.input.layout,
        "input_dtype": card.input.dtype,
        "model_name": card.name,
        "model_version": str(card.version),
    }


def strip_node_metadata(proto: onnx.ModelProto) -> None:
    """Drop per-node metadata (stack traces, FX node names, absolute paths of the machine that exported)."""
    for node in proto.graph.node:
        del node.metadata_props[:]


def set_metadata(proto: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Replace the model-level `metadata_props` (values must be strings)."""
    onnx.helper.set_model_props(proto, dict(props))

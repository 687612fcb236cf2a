"""`cnnserve import`: any ONNX image classifier (torchvision, timm, Keras via tf2onnx) into a repository version.

The graph is checked (one NCHW image input, float or uint8; one (N, classes) output; a fixed batch is made
dynamic), a uint8 -> (x / 255 - mean) / std step is prepended in the graph, the card is written, and the wrapped
graph is proved equal to the original on random pixels. Needs onnx and onnxruntime, never torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnserve.card import InputSpec, ModelCard, Normalization, OutputSpec, ResizeMode
from cnnserve.errors import CnnserveError, ConfigError, ExportError
from cnnserve.preprocess import PIXEL_MAX, normalization_constants, normalize
from cnnserve.process import EXIT_OK, configure_logging, fail

PROG = "cnnserve import"
#: Largest |wrapped - original| allowed on the same pixels: the prepended step is the numpy arithmetic, in float32.
IMPORT_ATOL = 1e-5
CHECK_BATCHES = (1, 7)
_FLOAT, _UINT8 = 1, 2  # onnx.TensorProto.FLOAT, UINT8
_NORMALIZED = "cnnserve_normalized"


class ImportModelError(ExportError):
    """The file is not an image classifier this command can take; the message says what and what was expected."""


@dataclass(frozen=True, slots=True)
class ImportConfig:
    model: Path
    repository: Path
    name: str
    labels: Path
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_shorter: int | None = None  # None: stretch
    version: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "\\" in self.name or self.name.startswith("."):
            raise ConfigError(f"--name must be a path-safe model name (no '/', no leading '.'), got {self.name!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ConfigError(
                f"--mean and --std need {self.channels} value(s) each (one per channel of --input), "
                f"got {len(self.mean)} and {len(self.std)}"
            )

    def spec(self) -> InputSpec:
        resize: ResizeMode = "stretch" if self.resize_shorter is None else "shorter"
        return InputSpec(
            channels=self.channels, height=self.height, width=self.width, resize=resize,
            resize_shorter=self.resize_shorter,
        )  # fmt: skip


def _dims(value_info: Any) -> list[int | str]:
    """The shape of a graph input or output: ints where fixed, the symbol (or '?') where not."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def check_graph(proto: Any, spec: InputSpec, num_labels: int, where: str) -> tuple[Any, Any]:
    """(input, output) value infos of an image classifier with `spec`'s input, or ImportModelError saying why not."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ImportModelError(f"{where} has {len(inputs)} inputs ({names}); expected one image input (N, C, H, W)")
    image, dims = inputs[0], _dims(inputs[0])
    elem = image.type.tensor_type.elem_type
    if elem not in (_FLOAT, _UINT8):
        raise ImportModelError(f"{where}: input {image.name!r} has ONNX element type {elem}; expected float32 or uint8")
    c, h, w = spec.shape
    if len(dims) != 4:
        raise ImportModelError(f"{where}: input {image.name!r} has shape {dims}; expected 4 axes (N, {c}, {h}, {w})")
    if dims[1:] != [c, h, w]:
        if dims[1:] == [h, w, c]:
            raise ImportModelError(
                f"{where}: input {image.name!r} is NHWC {dims}; expected NCHW (N, {c}, {h}, {w}): re-export it "
                f"channels-first (tf2onnx: --inputs-as-nchw {image.name})"
            )
        raise ImportModelError(
            f"{where}: input {image.name!r} has shape {dims}; expected (N, {c}, {h}, {w}) from --input"
        )
    if len(proto.graph.output) != 1:
        names = ", ".join(o.name for o in proto.graph.output)
        raise ImportModelError(f"{where} has {len(proto.graph.output)} outputs ({names}); expected one (N, classes)")
    output, out_dims = proto.graph.output[0], _dims(proto.graph.output[0])
    if len(out_dims) != 2:
        raise ImportModelError(f"{where}: output {output.name!r} has shape {out_dims}; expected (N, classes)")
    if output.type.tensor_type.elem_type != _FLOAT:
        raise ImportModelError(f"{where}: output {output.name!r} is not float32; expected float32 logits (N, classes)")
    if isinstance(out_dims[1], int) and out_dims[1] != num_labels:
        raise ImportModelError(
            f"{where}: output {output.name!r} has {out_dims[1]} classes but --labels names {num_labels}; "
            f"expected one label per class, in the output's order"
        )
    return image, output


def make_batch_dynamic(proto: Any, image: Any, output: Any) -> int | None:
    """Turn a fixed batch axis into the symbol N on the input and the output; returns the fixed size, if any."""
    in_dim = image.type.tensor_type.shape.dim[0]
    out_dim = output.type.tensor_type.shape.dim[0]
    fixed = in_dim.dim_value if in_dim.HasField("dim_value") else None
    for dim in (in_dim, out_dim):
        if dim.HasField("dim_value") or not dim.dim_param:
            dim.dim_param = "N"
    if fixed is not None:
        del proto.graph.value_info[:]  # shapes inferred for the fixed batch; onnxruntime infers them again
    return fixed


def prepend_normalization(proto: Any, image: Any, norm: Normalization) -> None:
    """The graph input becomes uint8 pixels; Cast, /255, -mean, /std feed what was the input (float32 NCHW)."""
    from onnx import helper, numpy_helper

    name = image.name
    for node in proto.graph.node:
        node.input[:] = [_NORMALIZED if i == name else i for i in node.input]
    for output in proto.graph.output:
        if output.name == name:
            raise ImportModelError(f"input {name!r} is also an output; expected a classifier")
    mean, std = normalization_constants(norm)  # the nodes below are cnnserve.preprocess.normalized's formula
    constants = {
        "cnnserve_255": np.array(PIXEL_MAX, dtype=np.float32),
        "cnnserve_mean": mean[None],  # (1, C, 1, 1)
        "cnnserve_std": std[None],
    }
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    steps = [
        helper.make_node("Cast", [name], ["cnnserve_float"], to=_FLOAT),
        helper.make_node("Div", ["cnnserve_float", "cnnserve_255"], ["cnnserve_unit"]),  # 0..1
        helper.make_node("Sub", ["cnnserve_unit", "cnnserve_mean"], ["cnnserve_centred"]),
        helper.make_node("Div", ["cnnserve_centred", "cnnserve_std"], [_NORMALIZED]),  # (N, C, H, W) float32
    ]
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(steps + nodes)
    image.type.tensor_type.elem_type = _UINT8


def drop_final_softmax(proto: Any, output: Any) -> bool:
    """A graph that ends in Softmax over the classes gives probabilities; the card says logits and the server
    applies softmax itself, so the final Softmax becomes an Identity. True when there was one."""
    for node in proto.graph.node:
        if node.op_type == "Softmax" and list(node.output) == [output.name]:
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            if axis in (-1, 1):
                node.op_type = "Identity"
                del node.attribute[:]
                return True
    return False


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def prove_equal(
    original: bytes,
    wrapped: bytes,
    spec: InputSpec,
    norm: Normalization,
    float_input: bool,
    fixed_batch: int | None,
    softmax: bool = False,
) -> float:
    """Largest |wrapped(pixels) - original(normalize(pixels))| over random batches of 1 and 7 (with `softmax`, of
    the wrapped logits' softmax). An original with a fixed batch runs image group by image group; the wrapped
    graph must take the whole batch at once."""
    before, after = _session(original), _session(wrapped)
    rng = np.random.default_rng(0)
    worst = 0.0
    for size in CHECK_BATCHES if fixed_batch in (None, 1) else (fixed_batch, 2 * fixed_batch):
        pixels = rng.integers(0, 256, size=(size, *spec.shape), dtype=np.uint8)
        feed = normalize(pixels, norm) if float_input else pixels
        step = fixed_batch or size
        expected = np.concatenate(
            [before.run(None, {before.get_inputs()[0].name: feed[i : i + step]})[0] for i in range(0, size, step)]
        )
        try:
            (actual,) = after.run(None, {after.get_inputs()[0].name: pixels})
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidArgument, RuntimeException)
            raise ImportModelError(
                f"the graph does not run a batch of {size} ({' '.join(str(exc).split())[:200]}); expected a batch "
                f"axis that can be made dynamic"
            ) from exc
        if actual.shape != expected.shape or expected.shape[0] != size:
            raise ImportModelError(f"a batch of {size} gave outputs {actual.shape}; expected ({size}, classes)")
        worst = max(worst, float(np.max(np.abs((_softmax(actual) if softmax else actual) - expected))))
    return worst


def import_model(config: ImportConfig) -> tuple[Path, ModelCard, float]:
    """Check, wrap, prove and write one version; returns (version folder, card, max |diff|)."""
    import onnx
    from google.protobuf.message import DecodeError

    from cnnserve.card import CARD_FILE, MODEL_FILE
    from cnnserve.export.metadata import flat_metadata, set_metadata
    from cnnserve.export.repository import check_writable, choose_version, write_version

    where = str(config.model)
    try:
        original = config.model.read_bytes()
    except OSError as exc:
        raise ImportModelError(f"cannot read {where}: {exc.strerror or exc}") from exc
    try:
        proto = onnx.load_model_from_string(original)
        if not proto.graph.node:
            raise DecodeError("no graph")
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ImportModelError(f"{where} is not an ONNX model ({exc}); expected a .onnx file") from exc
    try:
        labels = tuple(line.strip() for line in config.labels.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as exc:
        raise ImportModelError(f"cannot read --labels {config.labels}: {exc.strerror or exc}") from exc
    spec, norm = config.spec(), Normalization(config.mean, config.std, in_graph=True)
    image, output = check_graph(proto, spec, len(labels), where)
    float_input = image.type.tensor_type.elem_type == _FLOAT
    fixed_batch = make_batch_dynamic(proto, image, output)
    softmax = drop_final_softmax(proto, output)
    if float_input:
        prepend_normalization(proto, image, norm)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ImportModelError(f"{where}: the wrapped graph fails onnx.checker: {exc}") from exc
    check_writable(config.repository)
    version = choose_version(config.repository, config.name, config.version, config.force)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    card = ModelCard(
        name=config.name,
        version=version,
        architecture="imported",
        input=dataclasses.replace(spec, name=image.name, dtype="uint8"),
        output=OutputSpec(name=output.name),
        labels=labels,
        normalization=norm,
        opset=opset,
        training={
            "imported_from": config.model.name,
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "original_input_dtype": "float32" if float_input else "uint8",
            "original_batch": fixed_batch or "dynamic",
            "final_softmax_removed": softmax,
        },
    )
    set_metadata(proto, flat_metadata(card))
    wrapped = proto.SerializeToString()
    diff = prove_equal(original, wrapped, spec, norm, float_input, fixed_batch, softmax)
    if not diff <= IMPORT_ATOL:
        raise ImportModelError(f"the wrapped graph differs from the original by {diff:.2e}; at most {IMPORT_ATOL:g}")
    parity = {"check": "wrapped vs original", "batches": list(CHECK_BATCHES), "atol": IMPORT_ATOL, "max_abs_diff": diff}
    final = card.evolve(sha256=hashlib.sha256(wrapped).hexdigest(), parity=parity)
    files = {MODEL_FILE: wrapped, CARD_FILE: final.to_json().encode("utf-8")}
    return write_version(config.repository, config.name, version, files, config.force), final, diff


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers, e.g. 0.485,0.456,0.406") from None


def _input_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CxHxW, e.g. 3x224x224") from None
    return c, h, w


def _resize(text: str) -> int | None:
    if text == "stretch":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 'stretch' or the shorter side in pixels, e.g. 256"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn an ONNX image classifier (one NCHW float32 or uint8 input, one (N, classes) logits "
        "output) into a model repository version: the batch axis made dynamic, uint8 pixels normalized inside the "
        "graph, the card written, and the result proved equal to the original on random pixels.",
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX file to import")
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(os.environ.get("CNNSERVE_MODEL_REPOSITORY", "models")),
        metavar="PATH",
        help="the model repository to write into (default: $CNNSERVE_MODEL_REPOSITORY or models)",
    )
    parser.add_argument("--name", required=True, help="model name: the folder under the repository")
    parser.add_argument("--version", type=int, default=None, metavar="N", help="version (default: next free)")
    parser.add_argument("--force", action="store_true", help="replace the version folder if it exists")
    parser.add_argument("--labels", type=Path, required=True, help="class names, one a line, in the output's order")
    parser.add_argument("--input", type=_input_shape, required=True, metavar="CxHxW", help="e.g. 3x224x224")
    parser.add_argument("--mean", type=_floats, required=True, help="per-channel mean on the 0..1 scale")
    parser.add_argument("--std", type=_floats, required=True, help="per-channel std on the 0..1 scale")
    parser.add_argument(
        "--resize",
        type=_resize,
        default=None,
        metavar="stretch|PIXELS",
        help="how an image becomes HxW: 'stretch' (default), or the shorter side to PIXELS then the centre HxW "
        "(ImageNet models: 256)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    c, h, w = args.input
    try:
        config = ImportConfig(
            model=args.model, repository=args.repository, name=args.name, labels=args.labels, channels=c,
            height=h, width=w, mean=args.mean, std=args.std, resize_shorter=args.resize, version=args.version,
            force=args.force,
        )  # fmt: skip
        config.spec()
    except CnnserveError as exc:  # the flags do not make a model card
        return fail(PROG, exc, "configuring")
    try:
        path, card, diff = import_model(config)
    except CnnserveError as exc:  # a graph it cannot wrap: 1; the repository or the card (too few labels): 3
        return fail(PROG, exc)
    print(f"imported {path} ({card.num_classes} classes, max |wrapped - original| {diff:.2e}, sha256 {card.sha256})")
    return EXIT_OK

"""The parity check: onnxruntime on CPU against PyTorch eval() on the same uint8 pixels, batch sizes 1, 7 and 64.

Random pixels always; real images (a test set) when given. A case passes when every logit is within `atol` of
PyTorch's and the argmax is the same on every image (an image whose two best PyTorch logits are closer than
`atol` is a tie: either answer is right, and it is counted, not failed). The report is what goes in model.json.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from cnnserve.card import InputSpec
from cnnserve.errors import ExportError
from cnnserve.export.exported_model import cpu_session, pixels_sha256
from cnnserve.training.data import Dataset

BATCH_SIZES = (1, 7, 64)
#: How many of PyTorch's logits on real images the reference keeps (the rest is kept as argmax only).
REFERENCE_LOGITS = 64
_RANDOM_SEED = 0

InputKind = Literal["random", "real"]


@dataclass(frozen=True, slots=True)
class ParityCase:
    """All batches of one size on one kind of input."""

    inputs: InputKind
    batch_size: int
    images: int
    max_abs_diff: float  # largest |onnxruntime logit - PyTorch logit| over the images
    argmax_mismatches: int  # images whose top-1 class differs, ties excluded
    ties: int  # images whose two best PyTorch logits are within atol of each other

    def passed(self, atol: float) -> bool:
        return self.max_abs_diff <= atol and self.argmax_mismatches == 0


@dataclass(frozen=True, slots=True)
class RealImages:
    """What the real-image cases ran on, and how each model scored there (when the labels are the card's)."""

    source: str
    count: int
    sha256: str  # of the uint8 (N, C, H, W) pixels, C order: proves a later check sees the same images
    accuracy_pytorch: float | None
    accuracy_onnx: float | None


@dataclass(frozen=True, slots=True)
class ParityReport:
    atol: float
    cases: tuple[ParityCase, ...]
    real_images: RealImages | None
    provider: str
    onnxruntime_version: str
    torch_version: str

    @property
    def passed(self) -> bool:
        return all(case.passed(self.atol) for case in self.cases)

    @property
    def max_abs_diff(self) -> float:
        return max(case.max_abs_diff for case in self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "max_abs_diff": self.max_abs_diff}

    def summary(self) -> str:
        """A small table for people: one row per case, then the verdict."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"onnxruntime {self.onnxruntime_version} ({self.provider}) vs PyTorch {self.torch_version} eval(), "
            f"max |logit difference| allowed {self.atol:g}: {verdict}",
            f"  {'inputs':<7} {'batch':>5} {'images':>7} {'max |diff|':>11} {'argmax differs':>15} {'ties':>5}",
        ]
        for case in self.cases:
            flag = "" if case.passed(self.atol) else "   <- fails"
            lines.append(
                f"  {case.inputs:<7} {case.batch_size:>5} {case.images:>7} {case.max_abs_diff:>11.2e} "
                f"{case.argmax_mismatches:>15} {case.ties:>5}{flag}"
            )
        if self.real_images is not None:
            real = self.real_images
            lines.append(f"  real images: {real.count} from {real.source}")
            if real.accuracy_pytorch is not None and real.accuracy_onnx is not None:
                lines.append(f"  accuracy: PyTorch {real.accuracy_pytorch:.4f}, onnxruntime {real.accuracy_onnx:.4f}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, eq=False)
class ParityReference:
    """PyTorch's answers on the real images, kept so a clean clone (no checkpoint) can re-check the ONNX file."""

    images: RealImages
    predictions: np.ndarray  # int64 (N,): PyTorch's argmax on every real image
    logits: np.ndarray  # float32 (min(N, REFERENCE_LOGITS), num_classes): PyTorch's logits on the first images

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": asdict(self.images),
            "predictions": self.predictions.tolist(),
            "logits": self.logits.tolist(),
        }


@dataclass(frozen=True, slots=True, eq=False)
class ParityOutcome:
    report: ParityReport
    reference: ParityReference | None


def random_pixels(spec: InputSpec, count: int, seed: int = _RANDOM_SEED) -> np.ndarray:
    """Seeded uniform uint8 pixels (count, C, H, W): the same inputs on every run."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, *spec.shape), dtype=np.uint8)


def check_parity(
    model: nn.Module,
    model_bytes: bytes,
    spec: InputSpec,
    *,
    labels: Sequence[str],
    real: Dataset | None = None,
    atol: float = 1e-4,
) -> ParityOutcome:
    """Run both sides on random pixels (and on `real` images when given); never raises on a mismatch.

    `model` takes uint8 pixels (the export wrapper), `model_bytes` is the ONNX file. Raise ParityError yourself
    when `outcome.report.passed` is False.
    """
    session = cpu_session(model_bytes)
    model.eval()
    random = random_pixels(spec, sum(BATCH_SIZES))
    cases = list(_cases("random", _compare(model, session, spec, random, atol)))
    real_images, reference = None, None
    if real is not None:
        if real.image_shape != spec.shape:
            raise ExportError(
                f"parity images from {real.source} are {real.image_shape}; expected {spec.shape} (C, H, W) "
                f"as the model's input"
            )
        batches = _compare(model, session, spec, real.images, atol)
        cases += _cases("real", batches)
        torch_top1 = np.concatenate([b.torch_logits.argmax(axis=1) for b in batches])
        onnx_top1 = np.concatenate([b.onnx_logits.argmax(axis=1) for b in batches])
        head = np.concatenate([b.torch_logits for b in batches])[:REFERENCE_LOGITS]
        same_classes = tuple(real.label_names) == tuple(labels)
        real_images = RealImages(
            source=real.source,
            count=len(real),
            sha256=pixels_sha256(real.images),
            accuracy_pytorch=float(np.mean(torch_top1 == real.labels)) if same_classes else None,
            accuracy_onnx=float(np.mean(onnx_top1 == real.labels)) if same_classes else None,
        )
        reference = ParityReference(real_images, torch_top1.astype(np.int64), head.astype(np.float32))
    report = ParityReport(
        atol=atol,
        cases=tuple(cases),
        real_images=real_images,
        provider=session.get_providers()[0],
        onnxruntime_version=ort.__version__,
        torch_version=torch.__version__,
    )
    return ParityOutcome(report, reference)


@dataclass(frozen=True, slots=True, eq=False)
class _Batch:
    size: int
    torch_logits: np.ndarray  # (B, num_classes) float32
    onnx_logits: np.ndarray  # (B, num_classes) float32
    mismatches: int
    ties: int


def _batches(count: int) -> Iterator[tuple[int, int]]:
    """(start, stop) over `count` images: one batch of 1, one of 7, then batches of 64 (the last may be short)."""
    start = 0
    for size in BATCH_SIZES:
        while start < count:
            stop = min(start + size, count)
            yield start, stop
            start = stop
            if size != BATCH_SIZES[-1]:
                break


def _compare(
    model: nn.Module, session: ort.InferenceSession, spec: InputSpec, pixels: np.ndarray, atol: float
) -> list[_Batch]:
    input_name = session.get_inputs()[0].name
    results = []
    for start, stop in _batches(len(pixels)):
        chunk = np.array(pixels[start:stop], dtype=np.uint8, order="C")  # (B, C, H, W), a writable copy for torch
        with torch.inference_mode():
            expected = model(torch.from_numpy(chunk)).numpy()
        (actual,) = session.run(None, {input_name: chunk})
        if actual.shape != expected.shape:
            raise ExportError(f"onnxruntime returned logits of shape {actual.shape}; PyTorch {expected.shape}")
        top2 = np.sort(expected, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) < atol
        differs = expected.argmax(axis=1) != actual.argmax(axis=1)
        results.append(_Batch(stop - start, expected, actual, int(np.sum(differs & ~tie)), int(np.sum(tie))))
    return results


def _cases(kind: InputKind, batches: Sequence[_Batch]) -> Iterator[ParityCase]:
    """One case per batch size: a short last batch is counted with the size it was cut from."""
    grouped: dict[int, list[_Batch]] = {}
    for index, batch in enumerate(batches):
        size = BATCH_SIZES[min(index, len(BATCH_SIZES) - 1)]
        grouped.setdefault(size, []).append(batch)
    for size, group in grouped.items():
        yield ParityCase(
            inputs=kind,
            batch_size=size,
            images=sum(b.size for b in group),
            max_abs_diff=max(float(np.max(np.abs(b.onnx_logits - b.torch_logits), initial=0.0)) for b in group),
            argmax_mismatches=sum(b.mismatches for b in group),
            ties=sum(b.ties for b in group),
        )


def report_from_dict(data: Mapping[str, Any]) -> ParityReport:
    """Read back a report stored in a model card (model.json's `parity`)."""
    real = data.get("real_images")
    return ParityReport(
        atol=float(data["atol"]),
        cases=tuple(ParityCase(**case) for case in data["cases"]),
        real_images=RealImages(**real) if real else None,
        provider=str(data["provider"]),
        onnxruntime_version=str(data["onnxruntime_version"]),
        torch_version=str(data["torch_version"]),
    )

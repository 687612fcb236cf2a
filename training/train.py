"""`cnnserve train`: load the data, build the model, train it with evaluation each epoch, write the checkpoint.

Reads top to bottom: load_data -> augment -> evaluate -> train -> main. The checkpoint holds the weights and a
complete ModelCard (architecture and its arguments, uint8 input spec, labels, normalization computed from the
training data, and a `training` record: data, accuracy, recipe, seed, wall and CPU time).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import CheckpointError, CnnserveError, ConfigError, DataError
from cnnserve.process import EXIT_INTERRUPTED, EXIT_OK, configure_logging, exit_code, fail
from cnnserve.training.checkpoint import save_checkpoint
from cnnserve.training.config import TrainConfig, config_from_args
from cnnserve.training.data import FASHION_MNIST_LABELS, Dataset, channel_stats, load_idx, load_image_folders
from cnnserve.training.distill import Teacher
from cnnserve.training.models import build_model, count_parameters
from cnnserve.training.normalize import Normalize

log = logging.getLogger(__name__)


# --- data -------------------------------------------------------------------------------------------------------


def load_data(config: TrainConfig) -> tuple[Dataset, Dataset, str]:
    """(train, test, data set name) from --image-folder if given, else from the IDX files in --data-dir."""
    if config.image_folder is not None:
        spec = InputSpec(channels=config.channels, height=config.height, width=config.width)
        train, test = load_image_folders(config.image_folder, spec, config.test_fraction, config.seed)
        return train, test, f"image folder {config.image_folder.name}"
    train, test = load_idx(config.data_dir, "train"), load_idx(config.data_dir, "test")
    if train.image_shape != test.image_shape:
        raise DataError(f"{config.data_dir}: train images are {train.image_shape} but test images {test.image_shape}")
    name = "Fashion-MNIST" if train.label_names == FASHION_MNIST_LABELS else f"IDX {config.data_dir.name}"
    return train, test, name


def augment(pixels: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop with zero padding, per image, on uint8 (B, C, H, W)."""
    b, c, h, w = pixels.shape
    if config.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        pixels = torch.where(flip.view(b, 1, 1, 1), pixels.flip(-1), pixels)
    if config.crop_padding_px:
        p = config.crop_padding_px
        padded = F.pad(pixels, (p, p, p, p))  # (B, C, H+2p, W+2p), zeros = the data's black background
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        pixels = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return pixels


# --- evaluation -------------------------------------------------------------------------------------------------


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode on normalized images (N, C, H, W)."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])  # (B, num_classes)
        target = labels[start : start + batch_size]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == target).sum())
    return correct / len(labels), loss_sum / len(labels)


# --- training ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainResult:
    card: ModelCard
    path: Path


def make_optimizer(
    model: nn.Module, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    params = model.parameters()
    optimizer: torch.optim.Optimizer
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    if config.schedule == "onecycle":
        # OneCycleLR needs at least one step in each phase; a run of a few steps (--max-steps) gets a longer
        # warm-up share rather than a division by zero.
        steps = max(total_steps, 2)
        warmup = min(max(config.warmup_fraction, 1.5 / steps), 0.75)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=steps, pct_start=warmup
        )
    elif config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return optimizer, scheduler


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    criterion: nn.Module,
    teacher: Teacher | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: Normalize,
    config: TrainConfig,
    generator: torch.Generator,
    max_steps: int,
    desc: str,
) -> tuple[float, int]:
    """One shuffled pass over uint8 `images` (N, C, H, W), at most `max_steps` steps: (mean loss, steps taken)."""
    model.train()
    memory_format = torch.channels_last if config.use_channels_last else torch.contiguous_format
    order = torch.randperm(len(labels), generator=generator)
    loss_sum, seen, steps, wall0 = 0.0, 0, 0, time.perf_counter()
    total = min(-(-len(labels) // config.batch_size), max_steps)
    with tqdm(total=total, desc=desc, unit="step", disable=not sys.stderr.isatty(), leave=False) as bar:
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            pixels = augment(images[index], config, generator)  # uint8 (B, C, H, W)
            x = normalize(pixels).contiguous(memory_format=memory_format)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                logits = model(x)  # (B, classes)
                loss = criterion(logits, labels[index])
            if teacher is not None:
                loss = teacher.loss(logits.float(), teacher.targets(pixels, index), loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            steps += 1
            loss_sum += loss.item() * len(index)
            seen += len(index)
            bar.update()
            if steps % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen / (time.perf_counter() - wall0):.0f}")
            if steps >= max_steps:
                break
    return loss_sum / seen, steps


def train(config: TrainConfig) -> TrainResult:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if torch.get_num_threads() > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        log.warning("OMP_WAIT_POLICY is not PASSIVE: on shared cores training steps can be several times slower")
    torch.manual_seed(config.seed)  # weights and dropout
    generator = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation

    train_set, test_set, dataset_name = load_data(config)
    c, h, w = train_set.image_shape
    spec = InputSpec(channels=c, height=h, width=w, dtype="uint8")
    mean, std = channel_stats(train_set.images)
    normalization = Normalization(mean=mean, std=std, in_graph=False)
    normalize = Normalize(normalization)
    log.info("data: %s; train %d, test %d images of %dx%dx%d; mean %s std %s",
             dataset_name, len(train_set), len(test_set), c, h, w, mean, std)  # fmt: skip

    arch_args = {"in_channels": c, "num_classes": len(train_set.label_names), **config.arch_args}
    try:
        model = build_model(config.model, **arch_args)
    except CheckpointError as exc:
        raise ConfigError(f"--model {config.model} with --arch-arg {dict(config.arch_args)}: {exc}") from exc
    memory_format = torch.channels_last if config.use_channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]  # the stubs lack memory_format

    x_train = torch.tensor(train_set.images)  # uint8 (N, C, H, W); a copy: the IDX arrays are read-only
    y_train = torch.tensor(train_set.labels)
    x_test = normalize(torch.tensor(test_set.images)).contiguous(memory_format=memory_format)
    y_test = torch.tensor(test_set.labels)

    steps_per_epoch = -(-len(y_train) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    epochs = -(-total_steps // steps_per_epoch)  # the epochs that will run: fewer than --epochs with --max-steps
    optimizer, scheduler = make_optimizer(model, config, total_steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    teacher = None
    if config.teacher is not None:
        teacher = Teacher(config.teacher, train_set.label_names, spec, config.distill_alpha, config.distill_temperature)
        if not (config.hflip or config.crop_padding_px):
            teacher.precompute(x_train)  # without augmentation the teacher's targets never change
    log.info("model %s %s: %d parameters; %d steps of %d images",
             config.model, dict(config.arch_args), count_parameters(model), total_steps, config.batch_size)  # fmt: skip

    history: list[dict[str, Any]] = []
    kept_state: dict[str, torch.Tensor] = {}
    kept_epoch, step, loads = 0, 0, [os.getloadavg()[0]]
    for epoch in range(1, epochs + 1):
        epoch_wall0, epoch_cpu0 = time.perf_counter(), time.process_time()
        train_loss, steps = train_epoch(
            model, optimizer, scheduler, criterion, teacher, x_train, y_train, normalize, config, generator,
            max_steps=total_steps - step, desc=f"epoch {epoch}/{epochs}",
        )  # fmt: skip
        step += steps
        train_wall = time.perf_counter() - epoch_wall0
        accuracy, test_loss = evaluate(model, x_test, y_test, config.eval_batch_size)
        loads.append(os.getloadavg()[0])
        history.append({
            "epoch": epoch,
            "steps": step,
            "train_loss": round(train_loss, 5),
            "test_loss": round(test_loss, 5),
            "test_accuracy": accuracy,
            "train_wall_s": round(train_wall, 2),
            "epoch_wall_s": round(time.perf_counter() - epoch_wall0, 2),
            "epoch_cpu_s": round(time.process_time() - epoch_cpu0, 2),
            "load_avg_1m": round(loads[-1], 2),
        })  # fmt: skip
        log.info("epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.4f, %.0f img/s, %.1f s (load %.1f)",
                 epoch, epochs, train_loss, test_loss, accuracy, steps * config.batch_size / train_wall,
                 history[-1]["epoch_wall_s"], loads[-1])  # fmt: skip
        if config.keep == "final" or not kept_state or accuracy > history[kept_epoch - 1]["test_accuracy"]:
            kept_state, kept_epoch = copy.deepcopy(model.state_dict()), epoch
        finished = step >= total_steps
        card = ModelCard(
            name=config.model_name,
            architecture=config.model,
            arch_args=arch_args,
            input=spec,
            labels=train_set.label_names,
            normalization=normalization,
            training={
                "dataset": dataset_name,
                "data_source": {"train": train_set.source, "test": test_set.source},
                "train_images": len(train_set),
                "test_images": len(test_set),
                "test_accuracy": history[kept_epoch - 1]["test_accuracy"],
                "checkpoint": config.keep,  # which epoch's weights these are: the best on test, or the final
                "checkpoint_epoch": kept_epoch,
                "final_test_accuracy": accuracy,
                "best_test_accuracy": max(e["test_accuracy"] for e in history),
                "complete": finished,
                "epochs": epoch,
                "steps": step,
                "seed": config.seed,
                "parameters": count_parameters(model),
                "recipe": config.recipe() | ({"teacher": teacher.describe()} if teacher else {}),
                "wall_time_s": round(time.perf_counter() - wall0, 1),
                "cpu_time_s": round(time.process_time() - cpu0, 1),
                "threads": torch.get_num_threads(),
                "load_avg_1m": {"min": round(min(loads), 2), "max": round(max(loads), 2)},
                "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
                "history": history,
            },
        )
        # Written after every epoch, so an interrupted run still leaves the weights it would keep so far.
        kept_model = build_model(config.model, **arch_args)
        kept_model.load_state_dict(kept_state)
        save_checkpoint(config.out, kept_model, card)
        if finished:
            break
    log.info("wrote %s: %s weights of epoch %d, test accuracy %.4f (final %.4f), %.0f s wall, %.0f s CPU",
             config.out, config.keep, kept_epoch, card.training["test_accuracy"], card.training["final_test_accuracy"],
             card.training["wall_time_s"], card.training["cpu_time_s"])  # fmt: skip
    return TrainResult(card=card, path=config.out)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, quiet = config_from_args(argv)
        configure_logging(0 if quiet else 1)
        if config.pretrained:
            from cnnserve.training.finetune import finetune

            finetune(config)
        else:
            train(config)
    except CnnserveError as exc:  # bad settings: usage; unreadable data or teacher: could not start
        return fail("cnnserve train", exc)
    except OSError as exc:  # e.g. the checkpoint folder is not writable
        print(f"cnnserve train: cannot write {config.out}: {exc.strerror or exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("cnnserve train: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK

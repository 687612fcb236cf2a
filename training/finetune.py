"""Fine-tuning the pretrained ImageNet network on a folder of class folders: a new head for the folders' classes.

Frozen backbone (the default): every training image's 1280 features are computed once (once per augmented view),
and only the head is trained on them, so a few hundred photos train in minutes on a CPU. `--unfreeze` trains the
whole network on augmented batches instead (BatchNorm keeps its ImageNet statistics; the backbone learns at a
tenth of the head's rate). Images are read at 256x256 (shorter side 256, centre crop) by cnnserve.preprocess; the
centre 224x224 of that is exactly what the card's resize gives at serving time, and the augmentation (random
resized crop, horizontal flip) cuts its crops from the 256x256.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnserve.card import InputSpec, ModelCard, Normalization
from cnnserve.errors import ConfigError
from cnnserve.training.checkpoint import save_checkpoint
from cnnserve.training.config import TrainConfig
from cnnserve.training.data import load_image_folders
from cnnserve.training.efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_RESIZE_SHORTER,
    IMAGENET_SIZE,
    IMAGENET_STD,
    EfficientNetLite,
    base_weights,
    imagenet_input,
    pretrained_imagenet,
)
from cnnserve.training.normalize import Normalize

log = logging.getLogger(__name__)

FEATURE_BATCH = 32  # images per backbone forward pass when computing features


def centre(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, 256, 256) -> the centre (B, 3, 224, 224): the serving-time pixels of the same images."""
    top = (pixels.shape[-2] - IMAGENET_SIZE) // 2
    left = (pixels.shape[-1] - IMAGENET_SIZE) // 2
    return pixels[..., top : top + IMAGENET_SIZE, left : left + IMAGENET_SIZE]


def augment(pixels: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, 256, 256) -> uint8 (B, 3, 224, 224): a random resized crop (area 25-100%, aspect 3/4-4/3)
    when asked, else the centre, then a random horizontal flip when asked."""
    if not config.random_resized_crop:
        out = centre(pixels)
    else:
        crops = []
        side = pixels.shape[-1]
        for image in pixels:
            area = side * side * (0.25 + 0.75 * float(torch.rand(1, generator=generator)))
            ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(torch.rand(1, generator=generator)))
            w = min(side, round(math.sqrt(area * ratio)))
            h = min(side, round(math.sqrt(area / ratio)))
            y = int(torch.randint(0, side - h + 1, (1,), generator=generator))
            x = int(torch.randint(0, side - w + 1, (1,), generator=generator))
            crop = image[None, :, y : y + h, x : x + w].to(torch.float32)
            resized = F.interpolate(crop, size=(IMAGENET_SIZE, IMAGENET_SIZE), mode="bilinear", antialias=True)
            crops.append(resized.round().clamp(0, 255).to(torch.uint8))
        out = torch.cat(crops)
    if config.hflip:
        flip = torch.rand(len(out), generator=generator) < 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out


IMAGENET_NORMALIZATION = Normalization(IMAGENET_MEAN, IMAGENET_STD)


@torch.inference_mode()
def features(model: EfficientNetLite, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, 224, 224) -> float32 (N, 1280), the backbone in eval mode."""
    model.eval()
    normalized = Normalize(IMAGENET_NORMALIZATION)
    return torch.cat(
        [model.features(normalized(pixels[i : i + FEATURE_BATCH])) for i in range(0, len(pixels), FEATURE_BATCH)]
    )


def train_head(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> float:
    """AdamW on precomputed features, `config.epochs` shuffled passes; returns the last epoch's mean loss."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_sum = 0.0
    for _ in range(config.epochs):
        order, loss_sum = torch.randperm(len(y), generator=gen), 0.0
        for start in range(0, len(y), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = F.cross_entropy(head(x[index]), y[index], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
    return loss_sum / len(y)


def train_all(
    model: EfficientNetLite, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, gen: torch.Generator
) -> float:
    """--unfreeze: the whole network on augmented batches; BatchNorm stays in eval mode (ImageNet statistics)."""
    head = list(model._fc.parameters())
    backbone = [p for n, p in model.named_parameters() if not n.startswith("_fc.")]
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": config.lr / 10}, {"params": head, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )
    loss_sum, normalized = 0.0, Normalize(IMAGENET_NORMALIZATION)
    for _ in range(config.epochs):
        model.train()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        order, loss_sum = torch.randperm(len(y), generator=gen), 0.0
        for start in range(0, len(y), config.batch_size):
            index = order[start : start + config.batch_size]
            logits = model(normalized(augment(x[index], config, gen)))
            loss = F.cross_entropy(logits, y[index], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
    return loss_sum / len(y)


def finetune(config: TrainConfig) -> ModelCard:
    """Train a new head (or the whole network) on `config.image_folder`; writes the checkpoint, returns its card."""
    if config.image_folder is None:
        raise ConfigError("--pretrained needs --image-folder (or --data-dir) naming a folder of class folders")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    read = InputSpec(channels=3, height=256, width=256, resize="shorter", resize_shorter=IMAGENET_RESIZE_SHORTER)
    train_set, test_set = load_image_folders(config.image_folder, read, config.test_fraction, config.seed)
    labels = train_set.label_names
    x_train, y_train = torch.tensor(train_set.images), torch.tensor(train_set.labels)
    x_test, y_test = centre(torch.tensor(test_set.images)), torch.tensor(test_set.labels)
    model, imagenet = pretrained_imagenet()
    model._fc = nn.Linear(model._fc.in_features, len(labels))
    augmenting = config.random_resized_crop or config.hflip
    views = config.augment_views if augmenting else 1
    log.info("fine-tuning %s on %d classes: train %d, test %d images; backbone %s",
             imagenet.architecture, len(labels), len(y_train), len(y_test),
             "trained" if config.unfreeze else f"frozen, features of {views} view(s) per image")  # fmt: skip
    if config.unfreeze:
        loss = train_all(model, x_train, y_train, config, gen)
    else:
        # View 0 is the serving-time centre crop; the others are augmented.
        x = torch.cat([features(model, centre(x_train))] +
                      [features(model, augment(x_train, config, gen)) for _ in range(views - 1)])  # fmt: skip
        loss = train_head(model._fc, x, y_train.repeat(views), config, gen)
    model.eval()
    normalized = Normalize(IMAGENET_NORMALIZATION)
    with torch.inference_mode():
        predicted = torch.cat(
            [model(normalized(x_test[i : i + FEATURE_BATCH])).argmax(1) for i in range(0, len(y_test), FEATURE_BATCH)]
        )
    accuracy = float((predicted == y_test).float().mean())
    card = ModelCard(
        name=config.model_name,
        architecture=imagenet.architecture,
        arch_args={"in_channels": 3, "num_classes": len(labels)},
        input=imagenet_input(),
        labels=labels,
        normalization=IMAGENET_NORMALIZATION,
        training=training_record(config, train_set.source, test_set.source, accuracy, loss, views, wall0, cpu0),
    )
    save_checkpoint(config.out, model, card)
    log.info("wrote %s: test accuracy %.4f on %d images, %.0f s wall", config.out, accuracy, len(y_test),
             card.training["wall_time_s"])  # fmt: skip
    return card


def training_record(
    config: TrainConfig, train: str, test: str, accuracy: float, loss: float, views: int, wall0: float, cpu0: float
) -> dict[str, Any]:
    return {
        "dataset": f"image folder {config.image_folder.name if config.image_folder else ''}",
        "data_source": {"train": train, "test": test},
        "fine_tuned": True,
        "base_weights": base_weights(),
        "backbone": "trained" if config.unfreeze else "frozen",
        "feature_views": None if config.unfreeze else views,
        "test_accuracy": accuracy,
        "final_train_loss": round(loss, 5),
        "epochs": config.epochs,
        "seed": config.seed,
        "recipe": config.recipe(),
        "wall_time_s": round(time.perf_counter() - wall0, 1),
        "cpu_time_s": round(time.process_time() - cpu0, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "torch": str(torch.__version__),
    }

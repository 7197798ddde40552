"""A small classifier trained on the data set's own images: the offline evaluator.

It scores generated samples (class consistency, InfoGAN's c1) and its penultimate layer gives the
"domain" features for FID/KID. Trained once on the training split, tested on the held-out split,
and cached on disk keyed by the data set and the settings, so later runs load it in a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)
VERSION = 1  # bump when the architecture or training changes: old cache entries are then ignored


class DomainClassifier(nn.Module):
    """conv32/2 - conv64 - conv128/2 (each BN + ReLU) - avg-pool 4x4 - FC 256 (features) - FC classes."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, width: int = 32, feature_dim: int = 256):
        super().__init__()
        c = shape[0]
        self.shape, self.num_classes, self.feature_dim = tuple(shape), num_classes, feature_dim
        self.trunk = nn.Sequential(
            nn.Conv2d(c, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.BatchNorm2d(4 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(4 * width * 16, feature_dim), nn.ReLU(),
        )  # fmt: skip
        self.dropout = nn.Dropout(0.3)
        self.out = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.dropout(self.features(x)))


def cache_key(name: str, shape, num_classes: int, n_train: int, settings: dict[str, Any]) -> str:
    blob = json.dumps([VERSION, name, list(shape), num_classes, n_train, settings], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def train_classifier(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> DomainClassifier:
    """x: uint8 (N, C, H, W) or floats in [-1, 1]. Adam, cosine decay, +-2 px random shifts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DomainClassifier(tuple(x.shape[1:]), num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * max(1, len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(max(1, len(x) // batch_size)):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = to_input(x[idx]).to(device), y[idx].to(device)
            xb = random_shift(xb, 2, gen)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval().requires_grad_(False)


def to_input(x: Tensor) -> Tensor:
    return x.float().mul(2 / 255).sub(1) if x.dtype == torch.uint8 else x.float()


def random_shift(x: Tensor, pixels: int, gen: torch.Generator) -> Tensor:
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pixels + 1, (2,), generator=gen))
    return padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    device = next(net.parameters()).device
    correct = sum(
        (net(to_input(xb).to(device)).argmax(1).cpu() == yb).sum().item()
        for xb, yb in zip(x.split(batch_size), y.split(batch_size))
    )
    return correct / max(len(x), 1)


def load_or_train(datamodule: Any, cache_dir: str | Path, **settings: Any) -> tuple[DomainClassifier, float]:
    """The evaluator for a labelled data module, from the cache or trained now (and cached)."""
    datamodule.setup()
    (x, y), (xv, yv) = datamodule.data["train"], datamodule.data["val"]
    labelled = y >= 0
    if not labelled.any():
        raise ValueError(f"data={datamodule.name} has no labels: the domain classifier needs labelled images")
    num_classes = int(datamodule.num_classes or int(y.max()) + 1)
    x, y = x[labelled], y[labelled]
    key = cache_key(datamodule.name, x.shape[1:], num_classes, len(x), settings)
    path = Path(cache_dir) / f"classifier-{datamodule.name}-{key}.pt"
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = DomainClassifier(tuple(x.shape[1:]), num_classes)
            net.load_state_dict(state["state_dict"])
            return net.eval().requires_grad_(False), float(state["test_acc"])
        except Exception as e:  # a damaged cache entry is rebuilt, never trusted
            log.warning("ignoring unreadable classifier cache %s (%s); training anew", path, e)
    log.info(
        "training the domain classifier for data=%s (%d images); cached at %s", datamodule.name, len(x), path
    )
    net = train_classifier(x, y, num_classes, **settings)
    acc = accuracy(net, xv[yv >= 0], yv[yv >= 0]) if (yv >= 0).any() else float("nan")
    log.info("domain classifier test accuracy on the held-out split: %.4f", acc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({"state_dict": net.state_dict(), "test_acc": acc, "settings": settings}, tmp)
    os.replace(tmp, path)
    return net, acc

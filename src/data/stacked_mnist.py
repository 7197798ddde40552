"""Stacked MNIST (Metz et al. 2017; PacGAN, VEEGAN): three random digits as the R, G, B channels.

1,000 modes (000-999). The digits come from the embedded 5,000 MNIST digits (`source: mnist5k`,
no download) or torchvision's MNIST (`source: mnist`). Labels are the three-digit mode index.
Mode coverage is read by the digit classifier of the source data set, one channel at a time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from src.data.base import GANDataModule


class StackedMNIST(GANDataModule):
    def __init__(
        self,
        shape=(3, 28, 28),
        source: str = "mnist5k",
        root: str = "data",
        n_train: int = 128_000,
        n_val: int = 26_000,
        **kwargs: Any,
    ):
        kwargs.setdefault("num_classes", 1000)
        super().__init__(shape, **kwargs)
        if self.shape[0] != 3:
            raise ValueError(
                f"data=stacked_mnist stacks three digits: data.shape must be [3, H, W], got {list(shape)}"
            )
        if source == "mnist5k":
            from src.data.mnist5k import EmbeddedMNIST

            self.classifier_source = EmbeddedMNIST(shape=(1, *self.shape[1:]))
        elif source == "mnist":
            from src.data.torchvision_sets import MNIST

            self.classifier_source = MNIST(shape=(1, *self.shape[1:]), root=root)
        else:
            raise ValueError(f"data.source must be 'mnist5k' or 'mnist', got {source!r}")
        self.source, self.n_train, self.n_val = source, n_train, n_val

    @property
    def name(self) -> str:
        return f"stacked_{self.source}"

    def prepare_data(self) -> None:
        self.classifier_source.prepare_data()

    def stack(self, x: Tensor, y: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(x), (n, 3), generator=g)
        images = x[idx].squeeze(2)  # (n, 3, H, W): one digit per channel
        labels = (y[idx] * torch.tensor([100, 10, 1])).sum(1)
        return images, labels

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        self.classifier_source.setup()
        g = torch.Generator().manual_seed(self.seed)
        train = self.stack(*self.classifier_source.data["train"], self.n_train, g)
        val = self.stack(*self.classifier_source.data["val"], self.n_val, g)
        return {"train": train, "val": val}

    @property
    def stacked(self) -> tuple[int, int]:
        return 3, 10

    @property
    def classifier_data(self) -> GANDataModule:
        return self.classifier_source  # one digit per channel: the classifier learns the single digits

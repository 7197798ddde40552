"""2D Gaussian mixtures for mode-collapse studies, in PacGAN's setup (Lin et al. 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from src.data.base import GANDataModule


class GaussianMixture(GANDataModule):
    """Equal-weight isotropic Gaussians around `means`; labels are the mode index of each sample."""

    def __init__(self, means: Tensor, std: float, n_train: int = 100_000, n_val: int = 2_500, **kwargs):
        kwargs.setdefault("shape", (2,))
        super().__init__(**kwargs)
        if std <= 0:
            raise ValueError(f"data.std must be positive, got {std}")
        self.means, self.std = means.float(), float(std)
        self.n_train, self.n_val = n_train, n_val
        self.num_classes = len(self.means)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        y = torch.randint(len(self.means), (n,), generator=generator)
        x = self.means[y] + self.std * torch.randn(n, self.means.shape[1], generator=generator)
        return x, y

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        return {"train": self.sample(self.n_train, g), "val": self.sample(self.n_val, g)}

    @property
    def modes(self) -> tuple[Tensor, float]:
        return self.means, self.std


class Ring(GaussianMixture):
    """`modes` Gaussians evenly spaced on a circle (PacGAN: 8 modes, radius 1, std 0.01)."""

    def __init__(self, modes: int = 8, radius: float = 1.0, std: float = 0.01, **kwargs):
        angles = torch.arange(modes, dtype=torch.float64) * 2 * math.pi / modes
        means = radius * torch.stack([angles.cos(), angles.sin()], 1)
        super().__init__(means, std, **kwargs)
        self._name = f"ring{modes}"

    @property
    def name(self) -> str:
        return self._name


class Grid(GaussianMixture):
    """A square grid of Gaussians (PacGAN: means {-4,-2,0,2,4}^2, std 0.05)."""

    def __init__(self, side: int = 5, spacing: float = 2.0, std: float = 0.05, **kwargs):
        coords = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
        means = torch.cartesian_prod(coords, coords)
        super().__init__(means, std, **kwargs)
        self._name = f"grid{side * side}"

    @property
    def name(self) -> str:
        return self._name

"""Mode-collapse metrics for Gaussian mixtures, as PacGAN (Table 1) and VEEGAN define them.

A sample is high quality (HQ) if it lies within `radius` (3) standard deviations of its nearest
mode; a mode is captured if it is the nearest mode of at least `min_count` HQ samples; reverse KL
is KL(histogram of HQ samples over modes || uniform).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric


def mode_stats(samples: Tensor, means: Tensor, std: float, radius: float = 3.0) -> tuple[Tensor, Tensor]:
    """(per-mode count of HQ samples, number of samples)."""
    dist = torch.cdist(samples.float(), means.to(samples.device, torch.float32))
    nearest_dist, nearest = dist.min(dim=1)
    hq = nearest_dist <= radius * std
    counts = torch.bincount(nearest[hq], minlength=len(means))
    return counts, torch.tensor(len(samples), device=samples.device)


def summarize(counts: Tensor, total: Tensor | int, min_count: int = 1) -> dict[str, Tensor]:
    counts = counts.double()
    k = len(counts)
    n_hq = counts.sum()
    if n_hq > 0:
        p = counts / n_hq
        nz = p > 0
        rev_kl = (p[nz] * torch.log(p[nz] * k)).sum()
    else:
        rev_kl = torch.tensor(math.log(k), dtype=torch.float64)  # no HQ sample: as bad as one mode
    return {
        "modes": (counts >= min_count).sum().float(),
        "hq": (n_hq / max(float(total), 1.0)).float(),
        "rev_kl": rev_kl.float(),
    }


class ModeCoverage(Metric):
    """Accumulates HQ counts per mode over generated samples (real samples are ignored)."""

    full_state_update = False
    higher_is_better = None
    # The headline number for "best" checkpoints: reverse KL falls as modes are covered evenly.
    monitor = ("rev_kl", "min")
    names = ("modes", "hq", "rev_kl")  # what compute() returns

    def __init__(self, means: Tensor, std: float, radius: float = 3.0, min_count: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("means", means.float().clone(), persistent=False)
        self.std, self.radius, self.min_count = float(std), radius, min_count
        self.add_state("counts", torch.zeros(len(means), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, fake: Tensor, **_) -> None:
        counts, total = mode_stats(fake.flatten(1), self.means, self.std, self.radius)
        self.counts += counts
        self.total += total

    def compute(self) -> dict[str, Tensor]:
        return summarize(self.counts, self.total, self.min_count)

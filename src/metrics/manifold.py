"""Fidelity and diversity as two numbers each, on the same features as the FID.

Precision / recall (Kynkäänniemi et al. 2019): the k-NN balls of the real features make a "real manifold";
precision is the share of samples inside it, recall the share of real images inside the samples'
manifold. torch-fidelity's implementation computes them. Density / coverage (Naeem et al. 2020) are
written here (torch-fidelity has neither): density counts the real balls that hold each sample (divided by
k, ~1 when the sets match, above 1 when samples crowd the dense regions), coverage is the share of real
balls that hold at least one sample, which unlike recall ignores outlying samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_fidelity.metric_prc import calculate_precision_recall_full
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def distances(a: Tensor, b: Tensor) -> Tensor:
    # the direct formula, not the matrix-product one: a point at exactly a ball's radius stays on its border
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radius(x: Tensor, k: int) -> Tensor:
    """The distance of each point to its k-th nearest neighbour in its own set (itself excluded)."""
    return distances(x, x).kthvalue(k + 1, dim=1).values


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    # torch-fidelity's convention: features_1 = generated, features_2 = real
    return calculate_precision_recall_full(fake.double(), real.double(), neighborhood=k)


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    real, fake = real.double(), fake.double()
    inside = distances(real, fake) <= knn_radius(real, k)[:, None]  # [real i, fake j]: fake j in ball i
    density = inside.sum().item() / (k * fake.shape[0])
    coverage = inside.any(dim=1).double().mean().item()
    return density, coverage


def gathered(state: list[Tensor] | Tensor, empty: Tensor | None = None) -> Tensor:
    """A list state as one tensor (under DDP, torchmetrics has already concatenated it); `empty` when nothing came."""
    if isinstance(state, list) and not state:
        return torch.zeros(0, 1) if empty is None else empty
    return dim_zero_cat(state)


class Manifold(Metric):
    """precision, recall (k = `prc_k`), density, coverage (k = `dc_k`) of the samples against the held-out split.

    All features of one evaluation are kept (N x D floats per side: 500 x 256 on the default data).
    """

    full_state_update = False
    monitor = None
    names = ("precision", "recall", "density", "coverage")

    def __init__(self, extractor: nn.Module, prc_k: int = 3, dc_k: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.extractor, self.prc_k, self.dc_k = extractor, int(prc_k), int(dc_k)
        self.add_state("real", [], dist_reduce_fx="cat")
        self.add_state("fake", [], dist_reduce_fx="cat")

    def update(self, real: Tensor, fake: Tensor, **_) -> None:
        self.real.append(self.extractor(real).flatten(1).double())
        self.fake.append(self.extractor(fake).flatten(1).double())

    def compute(self) -> dict[str, Tensor]:
        real, fake = gathered(self.real), gathered(self.fake)
        if min(len(real), len(fake)) <= max(self.prc_k, self.dc_k):  # too few images for k neighbours
            nan = torch.tensor(float("nan"))
            return dict.fromkeys(self.names, nan)
        precision, recall = precision_recall(real, fake, self.prc_k)
        density, coverage = density_coverage(real, fake, self.dc_k)
        values = {"precision": precision, "recall": recall, "density": density, "coverage": coverage}
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}

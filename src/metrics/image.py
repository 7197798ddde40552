"""Image-quality and coverage metrics on (real, fake) batches from the held-out split."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image import FrechetInceptionDistance, InceptionScore, KernelInceptionDistance

from src.metrics.conditional import _Evaluator
from src.utils.figures import class_bars


class RealFake:
    """FID, KID or IS from torchmetrics fed our (real, fake) pairs; logged as `<kind>_<extractor>`.

    Real features are recomputed at every evaluation (the reference set is the held-out split).
    """

    def __init__(
        self, kind: str, extractor: nn.Module, tag: str, kid_subset: int = 1000, is_splits: int = 10
    ):
        self.kind, self.name = kind, f"{kind}_{tag}"
        self.monitor: tuple[str, str] | None = None  # the headline (FID) that "best" checkpoints follow
        self.kid_subset = kid_subset
        if kind == "fid":
            self.metric = FrechetInceptionDistance(feature=extractor)
            self.monitor = (self.name, "min")
        elif kind == "kid":
            self.metric = KernelInceptionDistance(feature=extractor, subset_size=kid_subset)
        elif kind == "is":
            self.metric = InceptionScore(feature=extractor, splits=is_splits)
        else:
            raise ValueError(f"unknown image metric {kind!r}; valid choices: fid, kid, is")

    def update(self, real: Tensor, fake: Tensor, **_) -> None:
        if self.kind == "is":
            self.metric.update(fake)
            return
        self.metric.update(real, real=True)
        self.metric.update(fake, real=False)

    @property
    def names(self) -> list[str]:
        """What compute() returns (known before any evaluation: sweeps check their metric at start-up)."""
        return [self.name] if self.kind == "fid" else [f"{self.name}_mean", f"{self.name}_std"]

    def compute(self) -> dict[str, Tensor]:
        if self.kind == "fid":
            return {self.name: self.metric.compute()}
        if self.kind == "kid":
            n = sum(len(f) for f in self.metric.fake_features)
            n = min(n, sum(len(f) for f in self.metric.real_features))
            world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
            self.metric.subset_size = max(2, min(self.kid_subset, n * world))
            mean, std = self.metric.compute()
            return {f"{self.name}_mean": mean, f"{self.name}_std": std}
        mean, std = self.metric.compute()
        return {f"{self.name}_mean": mean, f"{self.name}_std": std}

    def reset(self) -> None:
        self.metric.reset()

    def to(self, device: torch.device | str) -> RealFake:
        self.metric.to(device)
        return self


class ClassBalance(Metric):
    """Mode collapse on labelled data, read by the domain classifier: each class's share of the samples
    against its share of the training data. `class_kl` = KL(sample shares || data shares) (0 = the data's
    balance; a class never drawn adds nothing itself but inflates the others), the smallest and largest share,
    the classes drawn at least once, and every share (`class_share_<k>`, the histogram)."""

    full_state_update = False
    monitor = None

    def __init__(self, classifier: nn.Module, test_acc: float, data_hist: Tensor, **kwargs):
        super().__init__(**kwargs)
        self.evaluator = _Evaluator(classifier, test_acc)
        self.register_buffer("data_hist", data_hist.double() / data_hist.sum(), persistent=False)
        self.add_state("counts", torch.zeros(len(data_hist), dtype=torch.long), dist_reduce_fx="sum")
        k = len(data_hist)
        self.names = ("class_kl", "class_min_share", "class_max_share", "classes_covered") + tuple(
            f"class_share_{c}" for c in range(k)
        )
        self.last: tuple[Tensor, int] | None = None  # (shares, samples) of the last compute()

    def update(self, fake: Tensor, **_) -> None:
        self.counts += torch.bincount(self.evaluator.predict(fake), minlength=len(self.counts))

    def compute(self) -> dict[str, Tensor]:
        p = self.counts.double() / self.counts.sum().clamp(min=1)
        nz = p > 0
        kl = (p[nz] * (p[nz] / self.data_hist[nz].clamp(min=1e-12)).log()).sum()
        out = {
            "class_kl": kl.float(),
            "class_min_share": p.min().float(),
            "class_max_share": p.max().float(),
            "classes_covered": (self.counts > 0).sum().float(),
        }
        out.update({f"class_share_{c}": v.float() for c, v in enumerate(p)})
        self.last = (p.cpu(), int(self.counts.sum()))
        return out

    def figures(self) -> dict[str, np.ndarray]:
        """The histogram of the last compute() as a bar chart (the sample callback writes and logs it)."""
        if self.last is None:
            return {}
        return {"class_balance": class_bars(self.last[0], self.data_hist.cpu(), self.last[1])}


class StackedModes(Metric):
    """Stacked MNIST's 1,000 modes (Metz et al.; PacGAN): each channel read by the digit classifier,
    modes covered and KL(mode histogram || uniform)."""

    full_state_update = False
    monitor = ("stacked_modes", "max")
    names = ("stacked_modes", "stacked_kl")  # what compute() returns

    def __init__(
        self, classifier: nn.Module, test_acc: float, channels: int = 3, classes: int = 10, **kwargs
    ):
        super().__init__(**kwargs)
        self.evaluator, self.channels, self.classes = _Evaluator(classifier, test_acc), channels, classes
        self.add_state("counts", torch.zeros(classes**channels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, fake: Tensor, **_) -> None:
        mode = torch.zeros(len(fake), dtype=torch.long, device=fake.device)
        for c in range(self.channels):
            mode = mode * self.classes + self.evaluator.predict(fake[:, c : c + 1])
        self.counts += torch.bincount(mode, minlength=len(self.counts))

    def compute(self) -> dict[str, Tensor]:
        p = self.counts.double() / self.counts.sum().clamp(min=1)
        nz = p > 0
        kl = (p[nz] * (p[nz] * len(p)).log()).sum() if nz.any() else torch.tensor(math.log(len(p)))
        return {"stacked_modes": (self.counts > 0).sum().float(), "stacked_kl": kl.float()}

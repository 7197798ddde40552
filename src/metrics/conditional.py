"""Scores for conditional models, read by the domain classifier (or by the model's own Q head)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchmetrics import Metric

from src.metrics.classifier import to_input
from src.metrics.manifold import distances, gathered


class _Evaluator:
    """Holds the classifier outside nn.Module registration: it is not part of the GAN's checkpoint."""

    def __init__(self, net: nn.Module, test_acc: float):
        self.net, self.test_acc = net.eval().requires_grad_(False), test_acc

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        param = next(self.net.parameters(), None)
        if param is not None and param.device != x.device:
            self.net.to(x.device)
        return self.net(to_input(x)).argmax(1)


def best_mapping_accuracy(confusion: np.ndarray) -> float:
    """Accuracy under the best one-to-one map of rows (codes) to columns (labels), as InfoGAN scores c1."""
    rows, cols = linear_sum_assignment(-confusion)
    return float(confusion[rows, cols].sum() / max(confusion.sum(), 1))


class ClassConsistency(Metric):
    """Share of samples the classifier reads as the label they were generated for (cGAN, AC-GAN)."""

    full_state_update = False
    monitor = ("class_consistency", "max")
    names = ("class_consistency", "evaluator_acc")  # what compute() returns

    def __init__(self, classifier: nn.Module, test_acc: float, **kwargs):
        super().__init__(**kwargs)
        self.evaluator = _Evaluator(classifier, test_acc)
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, fake: Tensor, latent: dict[str, Tensor], **_) -> None:
        pred = self.evaluator.predict(fake)
        self.correct += (pred == latent["y"]).sum()
        self.total += len(pred)

    def compute(self) -> dict[str, Tensor]:
        return {
            "class_consistency": self.correct.float() / self.total.clamp(min=1),
            "evaluator_acc": torch.tensor(self.evaluator.test_acc),
        }


class CodeAccuracy(Metric):
    """InfoGAN's c1 as a classifier: codes vs labels under the best one-to-one mapping.

    `source="q"`: Q's predicted c1 on held-out real images against their labels (the paper's 5% error).
    `source="samples"`: the classifier's label for samples generated with each c1 value.
    """

    full_state_update = False

    def __init__(
        self, n_codes: int, num_classes: int, source: str = "q", classifier=None, test_acc=float("nan"), **kw
    ):
        super().__init__(**kw)
        if source not in ("q", "samples"):
            raise ValueError(f"source must be 'q' or 'samples', got {source!r}")
        if source == "samples" and classifier is None:
            raise ValueError("source='samples' needs the domain classifier")
        self.source, self.n_codes, self.num_classes = source, n_codes, num_classes
        self.evaluator = _Evaluator(classifier, test_acc) if classifier is not None else None
        self.monitor = ("c1_acc", "max") if source == "q" else None
        self.names = ("c1_acc",) if source == "q" else ("c1_sample_acc", "evaluator_acc")
        self.add_state("confusion", torch.zeros(n_codes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, fake: Tensor, latent: dict[str, Tensor], labels: Tensor | None = None, **kw) -> None:
        if self.source == "q":
            codes, classes = kw["code_pred"], labels
            if classes is None:
                return
        else:
            codes, classes = latent["c_cat"][:, 0], self.evaluator.predict(fake)
        index = codes.long() * self.num_classes + classes.long()
        self.confusion += torch.bincount(index, minlength=self.n_codes * self.num_classes).view_as(
            self.confusion
        )

    def compute(self) -> dict[str, Tensor]:
        acc = torch.tensor(best_mapping_accuracy(self.confusion.cpu().numpy()))
        if self.source == "q":
            return {"c1_acc": acc}
        return {"c1_sample_acc": acc, "evaluator_acc": torch.tensor(self.evaluator.test_acc)}


def frechet(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance of two feature sets' Gaussians (FID's formula), in float64."""
    a, b = a.double(), b.double()
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    cross = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((a.mean(0) - b.mean(0)).square().sum() + s1.trace() + s2.trace() - 2 * cross)


def mean_pairwise(x: Tensor) -> float:
    """Mean distance over the pairs of distinct rows (nan with fewer than 2)."""
    n = len(x)
    return distances(x, x).sum().item() / (n * (n - 1)) if n > 1 else float("nan")


def by_group(x: Tensor, groups: Tensor, fn, min_size: int = 2) -> dict[int, float]:
    return {int(g): fn(x[groups == g]) for g in groups.unique() if (groups == g).sum() >= min_size}


class _Grouped(Metric):
    """Keeps the features of real images with their labels and of samples with their condition."""

    full_state_update = False
    monitor = None

    def __init__(self, extractor: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.extractor = extractor
        for name in ("real", "real_groups", "fake", "fake_groups"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, real: Tensor, fake: Tensor, labels: Tensor | None, groups: Tensor | None = None, **_):
        if labels is None or groups is None:
            return
        keep = labels >= 0
        self.real.append(self.extractor(real[keep]).flatten(1).double())
        self.real_groups.append(labels[keep].long())
        self.fake.append(self.extractor(fake).flatten(1).double())
        self.fake_groups.append(groups.long())

    def gathered(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All features and groups of this evaluation (empty when no labelled batch came)."""
        ids = torch.zeros(0, dtype=torch.long)
        return (
            gathered(self.real),
            gathered(self.real_groups, ids),
            gathered(self.fake),
            gathered(self.fake_groups, ids),
        )


class IntraClassFID(_Grouped):
    """FID between the held-out images of each class and the samples drawn for that class, averaged over
    classes (cGAN, AC-GAN). Each class has ~1/K of the samples, so its bias is larger than the FID's:
    compare with the real-vs-real reference (`python -m src.eval reference=mnist5k`)."""

    names = ("intra_fid",)

    def compute(self) -> dict[str, Tensor]:
        real, real_groups, fake, fake_groups = self.gathered()
        fids = [
            frechet(real[real_groups == c], fake[fake_groups == c])
            for c in real_groups.unique()
            if min((real_groups == c).sum(), (fake_groups == c).sum()) >= 2
        ]
        return {"intra_fid": torch.tensor(sum(fids) / len(fids) if fids else float("nan"))}


class WithinDiversity(_Grouped):
    """How varied the samples of one condition are (a label, InfoGAN's c1 value): the mean pairwise feature
    distance of samples sharing a condition, averaged over conditions, divided by the same for held-out
    images of one class. 1 = as varied as the data; ~0 = one image per condition."""

    names = ("within_diversity",)

    def compute(self) -> dict[str, Tensor]:
        real, real_groups, fake, fake_groups = self.gathered()
        fake_d = list(by_group(fake, fake_groups, mean_pairwise).values())
        real_d = list(by_group(real, real_groups, mean_pairwise).values())
        if not fake_d or not real_d:
            return {"within_diversity": torch.tensor(float("nan"))}
        ratio = (sum(fake_d) / len(fake_d)) / max(sum(real_d) / len(real_d), 1e-12)
        return {"within_diversity": torch.tensor(ratio, dtype=torch.float32)}

"""The real-vs-real reference: what every metric gives when the "samples" are training images.

FID, precision / recall, intra-class FID and diversity all have a floor or ceiling set by the data and by
how many images are scored (500 held-out digits on the default data), not by 0 and 1. Scoring held-out
images against as many training images drawn at random (each with its own label as its "condition")
gives the values a perfect generator would reach under the same protocol: the row every result is read
against. The domain classifier learnt from these training images, so class consistency here reads its
training accuracy, a little above its held-out accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from src.metrics.classifier import to_input


class TrainingImages:
    """A stand-in for a perfect conditional generator: i.i.d. training images, their labels as the labels
    they were "drawn for". Exposes the facts the metrics registry reads (as a cGAN) and `eval_batch`."""

    label_conditioned = True
    code_classes = None
    continuous_codes = 0

    def __init__(self, data: Any, seed: int = 0):
        data.setup()
        self.x, self.y = data.data["train"]
        self.gen = torch.Generator().manual_seed(seed)

    def eval_batch(self, real: Tensor, labels: Tensor | None) -> dict[str, Any]:
        idx = torch.randint(len(self.x), (len(real),), generator=self.gen)
        fake, drawn = to_input(self.x[idx]).to(real.device), self.y[idx].to(real.device)
        return {"real": real, "fake": fake, "labels": labels, "latent": {"y": drawn}, "groups": drawn}


@torch.no_grad()
def reference_scores(metrics: dict[str, Any], data: Any, stand_in: TrainingImages) -> dict[str, float]:
    """Every metric on (held-out images, training images of the same labels), over the held-out split."""
    for metric in metrics.values():
        metric.to("cpu")
        metric.reset()
    for batch in data.val_dataloader():
        real, labels = batch[0], batch[1] if len(batch) > 1 else None
        if labels is not None and labels.dim() != 1:
            labels = None  # captions, not labels
        inputs = stand_in.eval_batch(real, labels)
        for metric in metrics.values():
            metric.update(**inputs)
    out = {}
    for metric in metrics.values():
        out.update({f"val/{k}": float(v) for k, v in metric.compute().items()})
    return out

"""Validation: each held-out batch gives real images, as many fakes (with the real labels, for conditional
models) and the latent they came from; the run's metrics (chosen by src/metrics/registry.py) take what they
need, and their results go to the checkpoint monitors and every logger. A mixin of GANModule."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from src.metrics.registry import metric_figures


class Evaluation:
    # --- facts the metrics registry reads (src/metrics/registry.py) ---------------------------------------
    label_conditioned = False  # G draws samples for given class labels

    @property
    def code_classes(self) -> int | None:
        """The size of the first categorical latent code (InfoGAN's c1), if any."""
        return None

    continuous_codes = 0  # InfoGAN's continuous codes (their rotation / width are measured)

    def condition_groups(self, latent: dict[str, Tensor]) -> Tensor | None:
        """Which samples share a condition (an id per sample: the label, InfoGAN's c1), or None."""
        return None

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if not self.metrics:
            return
        real, labels, _ = self.unpack_batch(batch)
        inputs = self.eval_batch(real, labels)
        for metric in self.metrics.values():
            metric.update(**inputs)

    @torch.no_grad()
    def eval_batch(self, real: Tensor, labels: Tensor | None) -> dict[str, Any]:
        """What the metrics see for one held-out batch (variants add entries: InfoGAN's Q codes)."""
        latent = self.sample_latent(real.shape[0], labels)
        fake = self.generate_eval(latent)
        groups = self.condition_groups(latent)
        return {"real": real, "fake": fake, "labels": labels, "latent": latent, "groups": groups}

    def on_validation_epoch_start(self) -> None:
        for metric in self.metrics.values():
            metric.to(self.device)

    def on_validation_epoch_end(self) -> None:
        if not self.metrics:
            return
        results = {}
        for metric in self.metrics.values():
            results.update({f"val/{k}": v for k, v in metric.compute().items()})
            metric.reset()
        self.log_dict(results, logger=False)  # callback metrics: checkpoint monitors see them
        if not self.trainer.sanity_checking:
            self.emit(results)

    def evaluation_figures(self) -> dict[str, Any]:
        """Charts of the last evaluation (the class balance), drawn when the sample callback asks for them."""
        return metric_figures(self.metrics)

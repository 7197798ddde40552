"""Class-conditional GANs: cGAN (labels into G and D) and AC-GAN (labels into G, a classifier head on D)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.errors import ConfigError
from src.losses.auxiliary import DOut
from src.models.module import GANModule
from src.models.networks.conditional import require_classes
from src.utils.figures import image_grid


class CGAN(GANModule):
    """Conditional GAN (Mirza & Osindero 2014): G(z, y) and D(x, y).

    Fakes are generated for the real batch's labels (`fake_labels: batch`, the data's class mix) or
    for uniformly drawn labels (`uniform`).
    """

    label_conditioned = True

    def condition_groups(self, latent: dict[str, Tensor]) -> Tensor | None:
        return latent["y"]

    def __init__(self, *args: Any, num_classes: int | None, fake_labels: str = "batch", **kwargs: Any):
        super().__init__(*args, **kwargs)
        require_classes(num_classes)
        if fake_labels not in ("batch", "uniform"):
            raise ValueError(f"model.fake_labels must be 'batch' or 'uniform', got {fake_labels!r}")
        self.num_classes, self.fake_labels = num_classes, fake_labels

    def sample_latent(
        self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        z = self.sample_noise(n, self.latent_dim, generator)
        if labels is None or self.fake_labels == "uniform":
            device = self.device if generator is None else generator.device
            labels = torch.randint(self.num_classes, (n,), device=device, generator=generator)
        return {"z": z, "y": labels.to(self.device)}

    def run_generator(self, net: torch.nn.Module, latent: dict[str, Tensor]) -> Tensor:
        return net(latent["z"], latent["y"])

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        return DOut(self.discriminator(x, labels))

    def check_data(self, datamodule: Any) -> None:
        if not datamodule.has_labels:
            raise ConfigError(
                f"model={type(self).__name__.lower()} needs labelled data but data={datamodule.name} has "
                "no labels: use labelled data (mnist5k, mnist, fashion_mnist, cifar10, ring8, grid25, image_folder "
                "with data.labels=true) or an unconditional model (gan, dcgan, infogan)"
            )
        labels = datamodule.data["train"][1]
        if int(labels.max()) >= self.num_classes:
            raise ConfigError(
                f"data={datamodule.name} has label {int(labels.max())} but the model has {self.num_classes} classes"
            )

    def figures(self, n: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        figures = super().figures(n, generator)
        if len(self.generator.shape) == 3:
            figures["classes"] = self.class_grid(generator)
        return figures

    def class_grid(self, generator: torch.Generator | None = None, cols: int = 10) -> np.ndarray:
        """One row per class, the same noise in each column."""
        z = self.sample_noise(cols, self.latent_dim, generator).repeat(self.num_classes, 1)
        y = torch.arange(self.num_classes, device=self.device).repeat_interleave(cols)
        return image_grid(self.generate_eval({"z": z, "y": y}), nrow=cols)


class ACGAN(CGAN):
    """AC-GAN (Odena et al. 2017): G(z, y); D(x) has an auxiliary classifier head trained on real and fake
    (the class term, `model.terms.ac`, adds the head)."""

    def discriminate(self, x: Tensor, labels: Tensor | None = None) -> DOut:
        adv, aux = self.discriminator(x)
        return DOut(adv, aux)
